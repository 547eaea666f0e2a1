package imap

import (
	"bytes"
	"strings"

	"mailproxy/policy"
	"mailproxy/proxy"
)

// The login reply is the only provider text mailproxy edits, and only in
// two ways: a REFERRAL response code (RFC 2221) is removed, because an app
// that followed it would connect somewhere without mailproxy; and "ID" is
// removed from capability lists, so that the app does not send its ID
// fields to the provider after login (mailproxy answers ID before login).

// filterStatus edits the text of a status response ("OK [CODE ...] text").
func (f *session) filterStatus(up *upstream, text string) string {
	status, rest, _ := strings.Cut(text, " ")
	if !strings.HasPrefix(rest, "[") {
		return text
	}
	end := strings.IndexByte(rest, ']')
	if end < 0 {
		return text
	}
	code, after := rest[1:end], strings.TrimPrefix(rest[end+1:], " ")
	name, args, _ := strings.Cut(code, " ")
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

// filterUntagged edits untagged responses line by line; lines that carry a
// literal, and what follows them, are left alone.
func (f *session) filterUntagged(up *upstream, raw []byte) string {
	var out bytes.Buffer
	for len(raw) > 0 {
		line, rest, found := bytes.Cut(raw, []byte("\r\n"))
		if _, lit := trailingLiteral(string(line)); lit || !found {
			out.Write(raw)
			break
		}
		s := string(line)
		upper := strings.ToUpper(s)
		switch {
		case strings.HasPrefix(upper, "* CAPABILITY "):
			s = s[:len("* CAPABILITY ")] + withoutID(s[len("* CAPABILITY "):])
		case strings.HasPrefix(upper, "* OK ["), strings.HasPrefix(upper, "* NO ["), strings.HasPrefix(upper, "* BAD ["):
			s = "* " + f.filterStatus(up, s[2:])
		}
		out.WriteString(s + "\r\n")
		raw = rest
	}
	return out.String()
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
