package estserver

import "github.com/millwright/millwright/internal/optcheck"

// Validate refuses a certificate or CRL lifetime that is zero or negative. The error is an
// *optcheck.Error keyed by the option's YAML key.
func (o Options) Validate() error {
	return optcheck.First(
		optcheck.Positive("cert_validity", o.CertValidity),
		optcheck.Positive("crl_validity", o.CRLValidity),
	)
}
