// Package firmware is the trust contract of over-the-air updates, shared by
// the server and the device agent: signed firmware manifests, ed25519 keys and
// the trusted-key list, verification of a manifest against the device that
// would install it, verification of the artifact's bytes, and semantic-version
// ordering.
//
// A manifest is signed over its exact JSON bytes; the envelope carries those
// bytes unchanged, so verification never depends on a re-encoding. The package
// is pure: it imports only the standard library, and time is a parameter.
package firmware
