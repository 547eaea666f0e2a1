package imap

import (
	"bytes"
	"strings"

	"mailproxy/policy"
	"mailproxy/proxy"
)

// The login reply is the only provider text mailproxy edits: a REFERRAL
// response code (RFC 2221) is removed, because an app that followed it
// would connect somewhere without mailproxy; "ID" is removed from
// capability lists, so that the app does not send its ID fields to the
// provider after login (mailproxy answers ID before login); and a response
// that carries a literal, or is not untagged, is dropped (filterUntagged).

// filterStatus edits the text of a status response ("OK [CODE ...] text").
// Any first word counts as the status (OK, NO, BAD, BYE, PREAUTH, or one an
// app might be lax about), and any run of spaces may precede the "[".
func (f *session) filterStatus(up *upstream, text string) string {
	status, rest, _ := strings.Cut(text, " ")
	rest = strings.TrimLeft(rest, " ")
	if !strings.HasPrefix(rest, "[") {
		return text
	}
	code, after := rest[1:], ""
	if end := strings.IndexByte(rest, ']'); end >= 0 {
		code, after = rest[1:end], strings.TrimPrefix(rest[end+1:], " ")
	}
	name, args, _ := strings.Cut(strings.TrimLeft(code, " "), " ")
	switch strings.ToUpper(name) {
	case "REFERRAL":
		f.referral(up, args)
		if after == "" {
			after = "Login referral removed by mailproxy"
		}
		return status + " " + after
	case "CAPABILITY":
		return status + " [" + name + " " + withoutID(args) + "]" + strings.TrimSuffix(" "+after, " ")
	}
	return text
}

// filterUntagged edits the untagged responses of the login reply. It walks
// all of them with the framing response() read them by. A response that
// carries a literal is dropped whole (its first line still filtered, so
// that a REFERRAL in it is audited): an app that does not take a status
// response's trailing {n} for a literal would read the literal's bytes as
// responses of their own, unfiltered. The first line of every other
// untagged response is filtered and forwarded.
func (f *session) filterUntagged(up *upstream, raw []byte) string {
	var out bytes.Buffer
	for len(raw) > 0 {
		line, rest, found := bytes.Cut(raw, []byte("\r\n"))
		if !found {
			break // not as response() frames: dropped, never forwarded raw
		}
		raw = rest
		n, lit := trailingLiteral(string(line))
		if !lit {
			if l, ok := f.filterLine(up, string(line)); ok {
				out.WriteString(l + "\r\n")
			}
			continue
		}
		f.filterLine(up, string(line[:bytes.LastIndexByte(line, '{')]))
		for ; lit; n, lit = trailingLiteral(string(line)) {
			if n > len(raw) {
				return out.String() // as above
			}
			if line, raw, found = bytes.Cut(raw[n:], []byte("\r\n")); !found {
				return out.String()
			}
		}
	}
	return out.String()
}

// filterLine edits the first line of an untagged response: "ID" leaves a
// CAPABILITY list, a REFERRAL leaves a status response (and is audited).
// A bare CR becomes a space, so that no app can read it as a line end. A
// line that is not untagged (a tagged one under another tag than
// mailproxy's) has no place in the reply: ok is false, and it is dropped.
func (f *session) filterLine(up *upstream, s string) (line string, ok bool) {
	s = strings.ReplaceAll(s, "\r", " ")
	tail, ok := strings.CutPrefix(s, "*")
	if !ok {
		_, status, _ := strings.Cut(s, " ")
		f.filterStatus(up, strings.TrimLeft(status, " ")) // a REFERRAL is audited
		return "", false
	}
	tail = strings.TrimLeft(tail, " ")
	word, rest, _ := strings.Cut(tail, " ")
	if edited := f.filterStatus(up, tail); edited != tail {
		return "* " + edited, true
	}
	if strings.EqualFold(word, "CAPABILITY") {
		return strings.TrimRight("* "+word+" "+withoutID(rest), " "), true
	}
	return s, true
}

func withoutID(caps string) string {
	var keep []string
	for _, c := range strings.Fields(caps) {
		if !strings.EqualFold(c, "ID") {
			keep = append(keep, c)
		}
	}
	return strings.Join(keep, " ")
}

// referral audits a REFERRAL that points outside the provider's hosts.
func (f *session) referral(up *upstream, urls string) {
	for _, u := range strings.Fields(urls) {
		host := referralHost(u)
		if host != "" && up.route.Provider.Allows(host) {
			continue
		}
		f.s.Deny(policy.ReasonNonProviderHost, host,
			"the provider referred the login to %s, outside provider %q's hosts; the referral was removed", proxy.Printable(u, 200), up.route.Provider.Name)
	}
}

// referralHost extracts the host of an IMAP URL (RFC 5092):
// imap://[user[;AUTH=mech]@]host[:port][/...].
func referralHost(u string) string {
	rest, ok := strings.CutPrefix(strings.ToLower(u), "imap://")
	if !ok {
		return ""
	}
	// The authority ends at the first '/', '?' or '#', as an app's URL
	// parser would have it: "imap://evil.example?@mail.provider" sends the
	// app to evil.example, whatever follows.
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest = rest[i+1:]
	}
	if strings.HasPrefix(rest, "[") {
		if i := strings.IndexByte(rest, ']'); i > 0 {
			return policy.NormalizeHost(rest[1:i])
		}
		return ""
	}
	if i := strings.IndexByte(rest, ':'); i >= 0 {
		rest = rest[:i]
	}
	return policy.NormalizeHost(rest)
}
