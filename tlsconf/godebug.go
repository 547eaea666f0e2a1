package tlsconf

import (
	"fmt"
	"slices"
	"strings"
)

// weakGODEBUG lists GODEBUG settings whose given value weakens TLS or X.509
// verification below mailproxy's policy.
var weakGODEBUG = map[string]string{
	"tlsrsakex":          "1", // RSA key exchange suites by default
	"tls3des":            "1", // 3DES suites by default
	"tls10server":        "1", // TLS 1.0 as a server default
	"tlsunsafeekm":       "1", // exported keying material without EMS
	"tlssha1":            "1", // SHA-1 signatures in TLS 1.2 handshakes
	"x509sha1":           "1", // SHA-1 signed certificates
	"x509ignoreCN":       "0", // host names matched against the Common Name
	"x509negativeserial": "1", // certificates with negative serial numbers
	"x509rsacrt":         "0", // RSA keys without CRT values checked
}

// CheckGODEBUG returns an error naming every setting in a GODEBUG value
// (as in the environment) that would weaken TLS or certificate checks.
// mailproxy refuses to start when it is not nil.
func CheckGODEBUG(v string) error {
	set := map[string]string{}
	for _, kv := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if ok {
			set[k] = val // later settings override earlier ones, as in Go
		}
	}
	var bad []string
	for k, val := range set {
		weak, known := weakGODEBUG[k]
		if known && val == weak {
			bad = append(bad, k+"="+val)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	slices.Sort(bad)
	return fmt.Errorf("GODEBUG=%q weakens TLS or certificate verification (%s); mailproxy will not run with it: unset GODEBUG or remove those settings",
		v, strings.Join(bad, ", "))
}
