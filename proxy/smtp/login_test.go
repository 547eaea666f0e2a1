package smtp

import (
	"errors"
	"testing"

	gosmtp "github.com/emersion/go-smtp"
)

func TestLoginServer(t *testing.T) {
	refused := errors.New("refused")
	check := func(user, pass string) error {
		if user == "alice" && pass == "secret" {
			return nil
		}
		return refused
	}
	type step struct {
		response  []byte
		challenge string
		done      bool
		err       error
	}
	cases := map[string][]step{
		"without initial response": {
			{nil, "Username:", false, nil},
			{[]byte("alice"), "Password:", false, nil},
			{[]byte("secret"), "", true, nil},
		},
		"user name as initial response": {
			{[]byte("alice"), "Password:", false, nil},
			{[]byte("secret"), "", true, nil},
		},
		"wrong password": {
			{[]byte("alice"), "Password:", false, nil},
			{[]byte("guess"), "", true, refused},
		},
		"a response after the end": {
			{[]byte("alice"), "Password:", false, nil},
			{[]byte("secret"), "", true, nil},
			{[]byte("more"), "", false, errAny},
		},
	}
	for name, steps := range cases {
		a := newLoginServer(check)
		for i, st := range steps {
			ch, done, err := a.Next(st.response)
			errOK := errors.Is(err, st.err)
			if st.err == errAny {
				errOK = err != nil
			}
			if string(ch) != st.challenge || done != st.done || !errOK {
				t.Errorf("%s, step %d: got %q %v %v, want %q %v %v", name, i, ch, done, err, st.challenge, st.done, st.err)
			}
		}
	}
}

// errAny stands for any error in a test case.
var errAny = errors.New("any error")

func TestParseReply(t *testing.T) {
	cases := []struct {
		in   string
		code gosmtp.EnhancedCode
		text string
	}{
		{"2.0.0 Ok: queued as ABC", gosmtp.EnhancedCode{2, 0, 0}, "Ok: queued as ABC"},
		{"Ok: queued as ABC", gosmtp.EnhancedCodeNotSet, "Ok: queued as ABC"},
		{"2.6.0 first\n2.6.0 second", gosmtp.EnhancedCode{2, 6, 0}, "first\nsecond"},
		{"2.x.0 odd", gosmtp.EnhancedCodeNotSet, "2.x.0 odd"},
		{"queued", gosmtp.EnhancedCodeNotSet, "queued"},
	}
	for _, c := range cases {
		code, text := parseReply(c.in)
		if code != c.code || text != c.text {
			t.Errorf("parseReply(%q) = %v %q, want %v %q", c.in, code, text, c.code, c.text)
		}
	}
}
