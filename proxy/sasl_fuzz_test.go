package proxy_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"mailproxy/proxy"
)

// errNoMoreLines is the challenge function's own error when the app's
// script has no more lines; ReadSASL must hand it back unchanged.
var errNoMoreLines = errors.New("the app sent nothing more")

// FuzzReadSASL runs ReadSASL on an arbitrary mechanism name, initial
// response and app lines. It must not panic; it asks for at most one
// challenge for PLAIN and two for LOGIN, each a base64 of what the
// mechanism prompts; it fails with one of the documented sentinels (or
// the challenge function's own error), and returns no credentials when
// it fails; and what it returns is what the app's base64 said.
//
//	go test -run '^$' -fuzz '^FuzzReadSASL$' -fuzztime 60s ./proxy/
func FuzzReadSASL(f *testing.F) {
	for _, s := range []struct {
		mech    string
		initial bool
		ir      string
		lines   string
	}{
		{"PLAIN", true, "AGFsaWNlAHNlY3JldA==", ""},
		{"plain", false, "", "AGFsaWNlAHNlY3JldA=="},
		{"PLAIN", true, "=", ""},
		{"PLAIN", false, "", "*"},
		{"PLAIN", true, "AGFsaWNl", ""},           // "\x00alice": two parts
		{"PLAIN", true, "AAAAAA==", ""},           // "\x00\x00\x00\x00": four parts
		{"PLAIN", true, "emlkAAB4", ""},           // empty user
		{"PLAIN", true, "AGFsaWNlAHNlY3JldA", ""}, // unpadded
		{"LOGIN", false, "", "YWxpY2U=\nc2VjcmV0"},
		{"login", true, "YWxpY2U=", "="},
		{"LOGIN", true, "=", "c2VjcmV0"},
		{"LOGIN", false, "", "YWxpY2U="},
		{"LOGIN", false, "", "YWxpY2U=\n*"},
		{"CRAM-MD5", false, "", "x"},
		{"PLAİN", true, "AGFsaWNlAHNlY3JldA==", ""}, // dotted capital I
		{"", false, "", ""},
		{"PLAIN", true, " AGFsaWNlAHNlY3JldA==\r", ""},
	} {
		f.Add(s.mech, s.initial, s.ir, s.lines)
	}
	f.Fuzz(func(t *testing.T, mech string, hasInitial bool, ir, script string) {
		lines := strings.Split(script, "\n")
		if script == "" {
			lines = nil
		}
		var challenges []string
		var answered []string
		challenge := func(c string) (string, error) {
			challenges = append(challenges, c)
			if len(lines) == 0 {
				return "", errNoMoreLines
			}
			l := lines[0]
			lines = lines[1:]
			answered = append(answered, l)
			return l, nil
		}
		var initial *string
		if hasInitial {
			initial = &ir
		}
		creds, err := proxy.ReadSASL(mech, initial, challenge)

		m := strings.ToUpper(mech)
		var prompts []string
		switch m {
		case "PLAIN":
			prompts = []string{""}
		case "LOGIN":
			prompts = []string{"Username:", "Password:"}
		}
		if len(challenges) > len(prompts) {
			t.Fatalf("ReadSASL(%q) challenged %d times: %q", mech, len(challenges), challenges)
		}
		for i, c := range challenges {
			if hasInitial && i == 0 && m == "LOGIN" {
				i = 1 // the initial response answered the first prompt
			}
			if want := base64.StdEncoding.EncodeToString([]byte(prompts[i])); c != want {
				t.Fatalf("ReadSASL(%q) challenged with %q, want %q", mech, c, want)
			}
		}

		if err != nil {
			switch {
			case errors.Is(err, proxy.ErrSASLCancelled), errors.Is(err, proxy.ErrSASLMalformed),
				errors.Is(err, proxy.ErrSASLMechanism), errors.Is(err, errNoMoreLines):
			default:
				t.Fatalf("ReadSASL(%q) failed with %v, not a documented error", mech, err)
			}
			if errors.Is(err, proxy.ErrSASLMechanism) != (prompts == nil) {
				t.Fatalf("ReadSASL(%q): %v", mech, err)
			}
			if creds != (proxy.Credentials{}) {
				t.Fatalf("ReadSASL(%q) failed (%v) but returned credentials for %q", mech, err, creds.Username)
			}
			return
		}

		// The responses the app gave, in order, as ReadSASL saw them.
		var resp []string
		if hasInitial {
			resp = append(resp, ir)
		}
		resp = append(resp, answered...)
		decode := func(s string) string {
			if s == "=" {
				return ""
			}
			b, derr := base64.StdEncoding.DecodeString(s)
			if derr != nil || s == "*" {
				t.Fatalf("ReadSASL(%q) accepted the response %q", mech, s)
			}
			return string(b)
		}
		var want proxy.Credentials
		switch m {
		case "PLAIN":
			if len(resp) != 1 {
				t.Fatalf("ReadSASL(PLAIN) succeeded on %d responses", len(resp))
			}
			parts := strings.Split(decode(resp[0]), "\x00")
			if len(parts) != 3 {
				t.Fatalf("ReadSASL(PLAIN) accepted %q", resp[0])
			}
			want = proxy.Credentials{Authzid: parts[0], Username: parts[1], Password: proxy.NewSecret(parts[2])}
		case "LOGIN":
			if len(resp) != 2 {
				t.Fatalf("ReadSASL(LOGIN) succeeded on %d responses", len(resp))
			}
			want = proxy.Credentials{Username: decode(resp[0]), Password: proxy.NewSecret(decode(resp[1]))}
		}
		if creds != want || creds.Username == "" {
			t.Fatalf("ReadSASL(%q) = %q/%q, want %q/%q", mech, creds.Authzid, creds.Username, want.Authzid, want.Username)
		}
	})
}

// secretMarker stands in the fuzzed passwords: the only place it may
// appear is Password.Reveal().
const secretMarker = "Pw-MARKER-7f3a"

// FuzzSASLCredentials builds PLAIN and LOGIN exchanges from an arbitrary
// authzid, user name and password (with secretMarker in it), as an app
// would, with or without an initial response, and checks that ReadSASL
// returns exactly those credentials; then that no way of printing them
// (fmt's verbs, slog's JSON and text handlers, encoding/json) shows the
// password or its hex.
//
//	go test -run '^$' -fuzz '^FuzzSASLCredentials$' -fuzztime 60s ./proxy/
func FuzzSASLCredentials(f *testing.F) {
	f.Add("", "alice", "secret", false, false)
	f.Add("admin", "alice@example.com", "pa ss\x00word", false, true)
	f.Add("", "alice%hosted.example", "\xff\xfe", true, true)
	f.Add("", "bob", "", true, false)
	f.Add("", "***", "***", true, true)
	f.Add("x", "é", "\r\n*", false, false)
	f.Fuzz(func(t *testing.T, authzid, user, pass string, login, useInitial bool) {
		pass = pass + secretMarker + pass
		if user == "" || strings.Contains(user+authzid, secretMarker) {
			return
		}
		if !login && strings.Contains(authzid+user+pass, "\x00") {
			return // PLAIN separates its fields with NUL: not representable
		}
		b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
		var mech string
		var msgs []string
		if login {
			mech, msgs = "LOGIN", []string{b64(user), b64(pass)}
			authzid = ""
		} else {
			mech, msgs = "PLAIN", []string{b64(authzid + "\x00" + user + "\x00" + pass)}
		}
		var initial *string
		if useInitial {
			initial = &msgs[0]
			msgs = msgs[1:]
		}
		creds, err := proxy.ReadSASL(mech, initial, func(string) (string, error) {
			if len(msgs) == 0 {
				return "", errNoMoreLines
			}
			m := msgs[0]
			msgs = msgs[1:]
			return m, nil
		})
		if err != nil {
			t.Fatalf("ReadSASL(%s) of user %q: %v", mech, user, err)
		}
		if creds.Authzid != authzid || creds.Username != user || creds.Password.Reveal() != pass || len(msgs) != 0 {
			t.Fatalf("ReadSASL(%s) = %q/%q, want %q/%q and the password back", mech, creds.Authzid, creds.Username, authzid, user)
		}

		// An OAuth2 access token travels in the same credentials, and
		// must not print either.
		creds.Token = proxy.NewSecret(pass)

		leaks := []string{secretMarker, hex.EncodeToString([]byte(secretMarker)), strings.ToUpper(hex.EncodeToString([]byte(secretMarker))),
			base64.StdEncoding.EncodeToString([]byte(secretMarker))[:12]}
		var outs []string
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%T %v", "%d", "%60v"} {
			outs = append(outs, fmt.Sprintf(verb, creds), fmt.Sprintf(verb, &creds), fmt.Sprintf(verb, creds.Password), fmt.Sprintf(verb, creds.Token))
		}
		outs = append(outs, fmt.Sprint(creds, []proxy.Credentials{creds}, map[string]any{"c": creds}), fmt.Sprintln(creds.Password))
		var logs bytes.Buffer
		for _, h := range []slog.Handler{slog.NewJSONHandler(&logs, nil), slog.NewTextHandler(&logs, nil)} {
			l := slog.New(h)
			l.Info("login", "creds", creds, "ptr", &creds, "pw", creds.Password, "group", slog.GroupValue(slog.Any("pw", creds.Password)))
		}
		outs = append(outs, logs.String())
		if j, err := json.Marshal(creds); err == nil {
			outs = append(outs, string(j))
		}
		for _, o := range outs {
			for _, leak := range leaks {
				if strings.Contains(o, leak) {
					t.Fatalf("the password shows when credentials are printed (%q found)", leak)
				}
			}
		}
	})
}

// FuzzReadLine reads arbitrary bytes line by line with a small buffer
// and limit: every line comes back without its LF or CRLF and at most
// max bytes long (an unterminated tail at EOF, max+2), the lines and the
// ending bytes add up to the input, and only a line over the limit is
// ErrLineTooLong.
//
//	go test -run '^$' -fuzz '^FuzzReadLine$' -fuzztime 60s ./proxy/
func FuzzReadLine(f *testing.F) {
	for _, s := range []string{
		"a1 NOOP\r\na2 LOGOUT\r\n",
		"abcd\n",
		"abc\r\n",
		"abcd\r\n",
		"abc\r\r\n",
		"\n\n\r\n",
		"no end",
		strings.Repeat("x", 40) + "\n",
	} {
		f.Add(uint8(2), []byte(s)) // max 3
		f.Add(uint8(16), []byte(s))
	}
	f.Fuzz(func(t *testing.T, maxSel uint8, input []byte) {
		max := int(maxSel%64) + 1
		br := bufio.NewReaderSize(bytes.NewReader(input), 16)
		consumed := 0
		for {
			line, err := proxy.ReadLine(br, max)
			if errors.Is(err, proxy.ErrLineTooLong) {
				rest := input[consumed:]
				end := bytes.IndexByte(rest, '\n')
				body := rest
				if end >= 0 {
					body = bytes.TrimSuffix(rest[:end], []byte("\r"))
				}
				if len(body) <= max {
					t.Fatalf("max %d: a line of %d bytes (%q) is too long", max, len(body), body)
				}
				return
			}
			if err == nil && len(line) > max || len(line) > max+2 {
				t.Fatalf("max %d: ReadLine returned %d bytes (%v): %q", max, len(line), err, line)
			}
			if err == io.EOF {
				if !bytes.Equal(line, input[consumed:]) {
					t.Fatalf("max %d: at the end, ReadLine returned %q, want %q", max, line, input[consumed:])
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadLine: %v", err)
			}
			rest := input[consumed:]
			if !bytes.HasPrefix(rest, line) || bytes.IndexByte(line, '\n') >= 0 {
				t.Fatalf("max %d: ReadLine returned %q from %q", max, line, rest)
			}
			switch after := rest[len(line):]; {
			case bytes.HasPrefix(after, []byte("\r\n")):
				consumed += len(line) + 2
			case bytes.HasPrefix(after, []byte("\n")):
				consumed += len(line) + 1
			default:
				t.Fatalf("max %d: ReadLine returned %q, followed by %q, not a line end", max, line, after)
			}
		}
	})
}
