// Package devicepolicy answers the device gateway's questions from the device registry and
// the ingest pipeline: whether a device may connect (RegistryAuthorizer, with its cache), what
// a device reported about itself at connect (FactRecorder, written to the registry in the
// background), and the gateway's view of a stored batch (Ingester).
//
// It sits between package gateway, which holds the device-facing transport and sessions and
// declares what it needs in its own types, and the packages that hold the state: registry and
// ingest. The gateway does not import this package, so it links neither the registry's SQL
// drivers nor the TSDB; the server wires the two together. The registry does not import it
// either: the registry is storage, shared with the API and the CLI, and has no business with
// connect-time caches or the gateway's types.
package devicepolicy
