package registry

import (
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/millwright/millwright/protocol"
)

// Limits on stored strings.
const (
	// MaxNameLen is the longest tag key, group name or operator name, in bytes.
	MaxNameLen = 128
	// MaxValueLen is the longest tag value or reported fact (model, operator, firmware), in bytes.
	MaxValueLen = 256
)

func validateDeviceID(id string) error {
	if err := protocol.ValidateDeviceID(id); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// validateName checks a tag key or group name: 1 to MaxNameLen bytes of letters, digits and
// "_-.:/". Keeping '=' and ',' out lets the CLI and API take "key=value,key=value".
func validateName(what, s string) error {
	if s == "" || len(s) > MaxNameLen {
		return fmt.Errorf("%w: %s %q must be 1 to %d bytes long", ErrInvalid, what, s, MaxNameLen)
	}
	for _, c := range s {
		if (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			c == '_' || c == '-' || c == '.' || c == ':' || c == '/' {
			continue
		}
		return fmt.Errorf("%w: %s %q has %q; only letters, digits and _-.:/ are allowed", ErrInvalid, what, s, c)
	}
	return nil
}

// validateText checks free text (tag values, reported facts, operator names): valid UTF-8, no
// control characters, at most limit bytes.
func validateText(what, s string, limit int) error {
	if len(s) > limit {
		return fmt.Errorf("%w: %s is %d bytes long, the limit is %d", ErrInvalid, what, len(s), limit)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s %q is not valid UTF-8", ErrInvalid, what, s)
	}
	for _, c := range s {
		if unicode.IsControl(c) {
			return fmt.Errorf("%w: %s %q contains control character %U", ErrInvalid, what, s, c)
		}
	}
	return nil
}

func validateTags(tags map[string]string) error {
	for k, v := range tags {
		if err := validateName("tag key", k); err != nil {
			return err
		}
		if err := validateText("tag value of "+k, v, MaxValueLen); err != nil {
			return err
		}
	}
	return nil
}

func validateStatus(s Status) error {
	switch s {
	case StatusPending, StatusActive, StatusSuspended, StatusRevoked:
		return nil
	}
	return fmt.Errorf("%w: status %q: want pending, active, suspended or revoked", ErrInvalid, s)
}

func validateRole(r Role) error {
	switch r {
	case RoleAdmin, RoleOperator, RoleViewer:
		return nil
	}
	return fmt.Errorf("%w: role %q: want admin, operator or viewer", ErrInvalid, r)
}
