package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"

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
	cert, _, err := tlsconf.LoadOrCreateLocalCert(dir, listenerNames(c))
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

type certFlags struct {
	fs    *flag.FlagSet
	path  *string
	renew *bool
}

func newCertFlags(stderr io.Writer) *certFlags {
	fs := newFlags("cert", stderr)
	return &certFlags{fs: fs,
		path:  fs.String("config", "", "configuration file (its listener addresses are named in the certificate; default: as for run)"),
		renew: fs.Bool("renew", false, "replace the generated certificate when it lacks a listener address or expires within 30 days (apps must trust the new one)"),
	}
}

func certCmd(args []string, stdout, stderr io.Writer) int {
	f := newCertFlags(stderr)
	fs, path := f.fs, f.path
	if code, ok := parseFlags("cert", fs, args, stdout, stderr); !ok {
		return code
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
	if l == nil && !*f.renew {
		// The generated certificate is never replaced silently: apps that
		// trust it would refuse the new one.
		ch, file, err := inspectLocalCert(c)
		if err != nil {
			fmt.Fprintln(stderr, "mailproxy cert:", err)
			return exitFailure
		}
		if ch.Replaces() {
			printCert(stdout, ch.Current, file)
			fmt.Fprintf(stderr, "mailproxy cert: the certificate in %s is kept, but it", file)
			if len(ch.Missing) > 0 {
				fmt.Fprintf(stderr, " does not name %s", strings.Join(ch.Missing, ", "))
				if ch.Expiring {
					fmt.Fprint(stderr, " and it")
				}
			}
			if ch.Expiring {
				fmt.Fprintf(stderr, " expires on %s", ch.Current.Leaf.NotAfter.UTC().Format("2006-01-02"))
			}
			fmt.Fprintln(stderr, ".\n`mailproxy cert -renew` replaces it (mailproxy run does so when it starts); apps must then trust the new fingerprint.")
			return exitOK
		}
	}
	var old *x509.Certificate
	if l == nil {
		if ch, _, err := inspectLocalCert(c); err == nil && ch.Exists {
			old = ch.Current.Leaf
		}
	}
	cert, file, err := localCert(c, l)
	if err != nil {
		fmt.Fprintln(stderr, "mailproxy cert:", err)
		return exitFailure
	}
	printCert(stdout, cert, file)
	if old != nil && !old.Equal(cert.Leaf) {
		fmt.Fprintf(stdout, "\nReplaced the certificate with SHA-256 %s: apps that trusted it must trust this one.\n", tlsconf.Fingerprint(old))
	}
	return exitOK
}

func printCert(w io.Writer, cert tls.Certificate, file string) {
	pem.Encode(w, &pem.Block{Type: "CERTIFICATE", Bytes: cert.Leaf.Raw})
	fmt.Fprintf(w, "\nFile:    %s\nSHA-256: %s\nNames:   %v %v\nExpires: %s\n\n%s",
		file, tlsconf.Fingerprint(cert.Leaf), cert.Leaf.DNSNames, cert.Leaf.IPAddresses,
		cert.Leaf.NotAfter.UTC().Format("2006-01-02"), trustHelp)
}

// inspectLocalCert says what localCert would change about the generated
// certificate.
func inspectLocalCert(c *config.Config) (tlsconf.LocalCertChange, string, error) {
	dir, err := config.Dir()
	if err != nil {
		return tlsconf.LocalCertChange{}, "", err
	}
	ch, err := tlsconf.InspectLocalCert(dir, listenerNames(c))
	return ch, filepath.Join(dir, tlsconf.LocalCertFile), err
}

func listenerNames(c *config.Config) []string {
	var names []string
	if c != nil {
		for _, l := range c.Listeners {
			names = append(names, tlsconf.ListenerHost(l.Address))
		}
	}
	return names
}

// warnLocalCertChange says, before run replaces the generated local
// certificate (a listener address it lacks, or expiry within 30 days),
// which one goes and why: apps that trusted it will refuse the new one,
// and the user must know to trust that (`mailproxy cert` prints it).
func warnLocalCertChange(c *config.Config, stderr io.Writer) {
	generated := false
	for _, l := range c.Listeners {
		if l.LocalSecurity != proxy.LocalNone && l.LocalSecurity != "" && l.LocalCert == "" {
			generated = true
		}
	}
	if !generated {
		return
	}
	ch, file, err := inspectLocalCert(c)
	if err != nil || !ch.Replaces() {
		return
	}
	var why []string
	if len(ch.Missing) > 0 {
		why = append(why, "it does not name "+strings.Join(ch.Missing, ", "))
	}
	if ch.Expiring {
		why = append(why, "it expires on "+ch.Current.Leaf.NotAfter.UTC().Format("2006-01-02"))
	}
	fmt.Fprintf(stderr, "mailproxy: replacing the local certificate %s (SHA-256 %s) because %s; apps that trusted it must trust the new one (`mailproxy cert` prints it)\n",
		file, tlsconf.Fingerprint(ch.Current.Leaf), strings.Join(why, " and "))
}
