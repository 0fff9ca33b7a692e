// Package optcheck is how the server's Options types report a value they refuse. An *Error
// names the option by its YAML key path ("tsdb.retention"), the key of the configuration
// file, so that the command line can say which flag set it, or which key and line of the
// file did; a Validate method of a type that holds another type's options puts its own key
// in front with Within.
package optcheck

import (
	"errors"
	"fmt"
	"time"
)

// Error is an option's value refused.
type Error struct {
	// Key is the option's YAML key path, such as "tsdb.retention".
	Key string
	// Value is the value refused.
	Value any
	// Reason says what a valid value is, such as "must be positive".
	Reason string
}

// Error reads "invalid tsdb.retention -1h0m0s: must be positive".
func (e *Error) Error() string {
	return fmt.Sprintf("invalid %s %s: %s", e.Key, FormatValue(e.Value, nil), e.Reason)
}

// FormatValue writes an option's value as an error shows it: strings quoted, durations by
// formatDuration (nil: time.Duration's own String).
func FormatValue(v any, formatDuration func(time.Duration) string) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("%q", v)
	case time.Duration:
		if formatDuration != nil {
			return formatDuration(v)
		}
		return v.String()
	}
	return fmt.Sprint(v)
}

// Invalid refuses value of the option key for reason.
func Invalid(key string, value any, reason string) error {
	return &Error{Key: key, Value: value, Reason: reason}
}

// Number is any type a count, a size or a duration option has.
type Number interface {
	~int | ~int64 | ~uint16 | ~uint32
}

// Positive refuses a count, size or deadline that is zero or negative: zero would fall back
// to a default the operator did not choose, a negative value would turn a bound off.
func Positive[T Number](key string, v T) error {
	if v > 0 {
		return nil
	}
	return Invalid(key, v, "must be positive")
}

// First returns the first error that is not nil.
func First(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Within puts section in front of the key of an *Error in err ("tsdb" and "retention" make
// "tsdb.retention"); any other error is returned as it is.
func Within(section string, err error) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	return &Error{Key: section + "." + e.Key, Value: e.Value, Reason: e.Reason}
}
