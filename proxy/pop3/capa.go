package pop3

import "strings"

// capa is mailproxy's own CAPA answer before login (RFC 2449 §5). After
// login the app's CAPA goes to the provider and its answer comes back.
//
// USER and SASL are offered only where credentials may be sent; SASL
// lists PLAIN and LOGIN only, because a challenge mechanism (CRAM-MD5,
// SCRAM) cannot be relayed: the provider needs the password itself.
// RESP-CODES and AUTH-RESP-CODE (RFC 3206 §6) are honest because the
// provider's response codes are relayed and mailproxy's own refusals carry
// them. PIPELINING, TOP and UIDL describe the provider, which is not
// connected before login, so they are not listed: the app's CAPA after
// login gets the provider's own list.
func (f *session) capa() string {
	lines := []string{"+OK Capability list follows"}
	if f.s.PlaintextAuthAllowed() {
		lines = append(lines, "USER", "SASL PLAIN LOGIN")
	}
	lines = append(lines, "RESP-CODES", "AUTH-RESP-CODE")
	if f.s.OffersSTARTTLS() {
		lines = append(lines, "STLS")
	}
	lines = append(lines, ".")
	return strings.Join(lines, "\r\n") + "\r\n"
}
