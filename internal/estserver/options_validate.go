package estserver

import "github.com/millwright/millwright/internal/optcheck"

// Validate refuses a certificate or CRL lifetime that is zero or negative, and a negative
// dormant re-enrollment window (0 turns it off). The error is an *optcheck.Error keyed by the
// option's YAML key.
func (o Options) Validate() error {
	var window error
	if o.DormantReenrollWindow < 0 {
		window = optcheck.Invalid("dormant_reenroll_window", o.DormantReenrollWindow, "must be positive, or 0 to turn dormant re-enrollment off")
	}
	return optcheck.First(
		optcheck.Positive("cert_validity", o.CertValidity),
		optcheck.Positive("crl_validity", o.CRLValidity),
		window,
	)
}
