package main

import (
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"io"
	"path/filepath"

	"mailproxy/config"
	"mailproxy/proxy"
	"mailproxy/tlsconf"
)

// localTLS returns the function the server uses to get a listener's
// app-side TLS configuration: the listener's own local_cert/local_key, or
// the certificate generated once in the user's mailproxy folder, naming
// every listener address of c.
func localTLS(c *config.Config) func(proxy.ListenSpec) (*tls.Config, error) {
	return func(l proxy.ListenSpec) (*tls.Config, error) {
		cert, _, err := localCert(c, &l)
		if err != nil {
			return nil, err
		}
		return tlsconf.LocalServerConfig(cert), nil
	}
}

// localCert loads or creates the certificate listener l serves (l may be
// nil: the generated one).
func localCert(c *config.Config, l *proxy.ListenSpec) (tls.Certificate, string, error) {
	if l != nil && l.LocalCert != "" {
		cert, err := tlsconf.LoadLocalCert(l.LocalCert, l.LocalKey)
		return cert, l.LocalCert, err
	}
	dir, err := config.Dir()
	if err != nil {
		return tls.Certificate{}, "", err
	}
	var names []string
	if c != nil {
		for _, l := range c.Listeners {
			names = append(names, tlsconf.ListenerHost(l.Address))
		}
	}
	cert, _, err := tlsconf.LoadOrCreateLocalCert(dir, names)
	return cert, filepath.Join(dir, tlsconf.LocalCertFile), err
}

const trustHelp = `How to trust it:
  Thunderbird: connect once; when it warns about the certificate, choose
    "Confirm Security Exception" after checking the fingerprint above.
  Apple Mail / macOS: open the .pem file in Keychain Access, then set
    "When using this certificate: Always Trust" (it is CA:FALSE, for
    localhost and the listener addresses only).
  Windows / Outlook: certutil -addstore -user Root <file>, or double-click
    the file and install it in "Trusted Root Certification Authorities".
  iOS / Android on the LAN: send the file to the device and install it as a
    profile / user certificate.
  Anything that takes a CA file (curl, Python): point it at the file.
`

func certCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("cert", stderr)
	path := fs.String("config", "", "configuration file (its listener addresses are named in the certificate)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	var c *config.Config
	if *path != "" {
		var err error
		if c, err = config.Load(*path); err != nil {
			reportConfigError(err, stderr)
			return exitUsage
		}
	} else if found, err := loadConfig("", ""); err == nil {
		c = found
	}
	var l *proxy.ListenSpec
	if c != nil {
		for _, x := range c.Listeners {
			if x.LocalCert != "" {
				l = x
				break
			}
		}
	}
	cert, file, err := localCert(c, l)
	if err != nil {
		fmt.Fprintln(stderr, "mailproxy cert:", err)
		return exitFailure
	}
	pem.Encode(stdout, &pem.Block{Type: "CERTIFICATE", Bytes: cert.Leaf.Raw})
	fmt.Fprintf(stdout, "\nFile:    %s\nSHA-256: %s\nNames:   %v %v\nExpires: %s\n\n%s",
		file, tlsconf.Fingerprint(cert.Leaf), cert.Leaf.DNSNames, cert.Leaf.IPAddresses,
		cert.Leaf.NotAfter.UTC().Format("2006-01-02"), trustHelp)
	return exitOK
}
