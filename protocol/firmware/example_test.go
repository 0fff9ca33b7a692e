package firmware_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/millwright/millwright/protocol/firmware"
)

// The operator signs a manifest; the device verifies it against its trusted
// keys, its model and running version, then the downloaded bytes.
func Example() {
	pub, priv, err := firmware.GenerateKey()
	if err != nil {
		panic(err)
	}
	image := []byte("firmware image")
	sum := sha256.Sum256(image)
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

	sm, err := firmware.Sign(firmware.Manifest{
		Version:  "1.2.0",
		Model:    "gw-1",
		Artifact: firmware.Artifact{Name: "gw-1-1.2.0.img", SHA256: hex.EncodeToString(sum[:]), Size: int64(len(image))},
		MinFrom:  "1.0.0",
		Expires:  now.Add(30 * 24 * time.Hour),
		Created:  now,
	}, priv)
	if err != nil {
		panic(err)
	}
	wire, err := sm.Encode()
	if err != nil {
		panic(err)
	}

	// On the device.
	pubPEM, _ := firmware.EncodePublicKeyPEM(pub)
	trusted, err := firmware.ParseTrustedKeys(pubPEM)
	if err != nil {
		panic(err)
	}
	got, err := firmware.DecodeSignedManifest(wire)
	if err != nil {
		panic(err)
	}
	m, err := firmware.Verify(got, trusted, "gw-1", "1.1.0", now.Add(time.Hour))
	fmt.Println(m.Version, err)
	fmt.Println(firmware.VerifyArtifact(bytes.NewReader(image), m))

	_, err = firmware.Verify(got, trusted, "gw-1", "0.9.0", now.Add(time.Hour))
	fmt.Println(errors.Is(err, firmware.ErrTooOld))
	_, err = firmware.Verify(got, trusted, "gw-1", "1.3.0", now.Add(time.Hour))
	fmt.Println(errors.Is(err, firmware.ErrDowngrade))
	// Output:
	// 1.2.0 <nil>
	// <nil>
	// true
	// true
}
