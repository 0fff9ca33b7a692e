package firmware

import "errors"

// Refusals. Each is wrapped with a message naming the values involved; test
// for them with errors.Is.
var (
	// ErrMalformed: the envelope, the manifest or a version does not parse or
	// breaks a bound (size, number of signatures, field format).
	ErrMalformed = errors.New("malformed firmware manifest")
	// ErrBadSignature: a signature by a trusted key does not verify over the
	// manifest bytes; they (or the signature) were altered.
	ErrBadSignature = errors.New("bad manifest signature")
	// ErrUnknownKey: no signature is by a key in the trusted list.
	ErrUnknownKey = errors.New("manifest not signed by a trusted key")
	// ErrWrongModel: the manifest is for another hardware model.
	ErrWrongModel = errors.New("manifest for another hardware model")
	// ErrDowngrade: the version is lower than the running one and the
	// manifest is not signed as a rollback.
	ErrDowngrade = errors.New("downgrade not signed as a rollback")
	// ErrSameVersion: the version is the one already running.
	ErrSameVersion = errors.New("version already running")
	// ErrExpired: the manifest's expiry time has passed.
	ErrExpired = errors.New("manifest expired")
	// ErrTooOld: the running version is older than the manifest's min_from;
	// the server must offer an intermediate release first.
	ErrTooOld = errors.New("running version older than min_from")
	// ErrArtifactMismatch: the artifact's size or SHA-256 differs from the
	// manifest's.
	ErrArtifactMismatch = errors.New("artifact does not match manifest")
)
