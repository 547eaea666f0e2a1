package tlsconf

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"

	"mailproxy/policy"
	"mailproxy/tlsconf/trust"
)

// Trust on first use, on the trust anchor. The chain is verified first
// (system roots or ca_file), as always; then the root that verified it is
// compared with the one remembered for the host. The first connection
// remembers it; a later connection verified by another root is refused
// (reason pin), because that is what interception by a root the machine
// trusts looks like — and also what a provider changing CA looks like,
// which the user confirms with `mailproxy trust accept HOST`. Leaves and
// intermediates may change freely under the same root.
//
// Explicit pins take precedence: with pins, the anchor is not remembered
// nor compared (tofu "off"). tofu = false turns it off for one provider;
// a Dialer without a store (its zero value) has it off for all.

// Anchor returns the trust anchor of a verified connection: the root of
// one of its verified chains. When several chains verify, it prefers the
// one whose anchor has the hash remembered ("sha256/<base64>", may be
// empty), else the anchor with the smallest hash, so that the choice does
// not depend on the order Go found the chains in. It returns nil when
// nothing was verified.
func Anchor(cs tls.ConnectionState, remembered string) *x509.Certificate {
	var best *x509.Certificate
	bestPin := ""
	for _, chain := range cs.VerifiedChains {
		if len(chain) == 0 {
			continue
		}
		root := chain[len(chain)-1]
		pin := FormatPin(SPKIHash(root))
		if remembered != "" && pin == remembered {
			return root
		}
		if best == nil || pin < bestPin {
			best, bestPin = root, pin
		}
	}
	return best
}

// AnchorRecord is what the trust store keeps of host's anchor, first seen
// at now.
func AnchorRecord(host string, root *x509.Certificate, now time.Time) trust.Anchor {
	return trust.Anchor{Host: host, SHA256: FormatPin(SPKIHash(root)), Name: ShortName(root), Subject: root.Subject.String(), FirstSeen: now.UTC().Truncate(time.Second)}
}

// ShortName is a certificate's common name, or its whole subject when it
// has none: how a CA is named to a person.
func ShortName(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName
	}
	return c.Subject.String()
}

// checkAnchor applies trust on first use to an accepted handshake and
// fills f's AnchorSHA256 and TOFU.
func (d *Dialer) checkAnchor(host string, pr *Profile, cs tls.ConnectionState, f *policy.TLSFacts) error {
	f.TOFU = policy.TOFUOff
	if d.Trust == nil || !pr.TOFU || len(pr.Pins) > 0 {
		if root := Anchor(cs, ""); root != nil {
			f.AnchorSHA256 = FormatPin(SPKIHash(root))
		}
		return nil
	}
	old, known, err := d.Trust.Lookup(host)
	if err != nil {
		return policy.Deny(policy.ReasonPin, host, "the trust anchor cannot be checked: %v", err)
	}
	root := Anchor(cs, old.SHA256)
	if root == nil {
		return policy.Deny(policy.ReasonCertificate, host, "the certificate chain was not verified")
	}
	rec := AnchorRecord(host, root, time.Now())
	if !known {
		// Another connection may learn the host at the same moment: the
		// record in force is what counts.
		got, learned, err := d.Trust.Learn(rec)
		if err != nil {
			return policy.Deny(policy.ReasonPin, host, "the trust anchor cannot be remembered: %v", err)
		}
		if learned {
			f.AnchorSHA256, f.TOFU = rec.SHA256, policy.TOFULearned
			return nil
		}
		old = got
		root = Anchor(cs, old.SHA256)
		rec = AnchorRecord(host, root, time.Now())
	}
	f.AnchorSHA256 = rec.SHA256
	if old.SHA256 == rec.SHA256 {
		f.TOFU = policy.TOFUMatch
		return nil
	}
	dn := policy.Deny(policy.ReasonPin, host,
		"the certificate authority for %s changed from %q to %q; if you expected this, run `mailproxy trust accept %s`",
		host, cmp.Or(old.Name, old.Subject), ShortName(root), host)
	dn.Facts = fmt.Sprintf("remembered anchor %s since %s, subject %s; new anchor %s, subject %s",
		old.SHA256, old.FirstSeen.Format("2006-01-02"), old.Subject, rec.SHA256, rec.Subject)
	return dn
}
