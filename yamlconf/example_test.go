package yamlconf_test

import (
	"fmt"
	"time"

	"github.com/millwright/millwright/yamlconf"
)

func Example() {
	type Options struct {
		Listen  string        `yaml:"listen"`
		Timeout time.Duration `yaml:"timeout"`
	}
	opts := Options{Listen: ":8443", Timeout: 10 * time.Second} // the defaults
	err := yamlconf.Decode([]byte("timeout: 30s\n"), &opts)
	fmt.Println(opts.Listen, opts.Timeout, err)
	err = yamlconf.Decode([]byte("timeout: 30s\nlistne: :9443\n"), &opts)
	fmt.Println(err)
	// Output:
	// :8443 30s <nil>
	// listne: unknown key (line 2); did you mean "listen"?
}
