package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// TestErrorsAllAtOnce: a file with several problems — values of the wrong
// type among them — gets every one reported, in the file's order, each
// with its line, key and value, in words rather than Go's type names, and
// nothing that only follows from another (a listener whose provider did
// not load, a required value that was there but misspelt or mistyped).
func TestErrorsAllAtOnce(t *testing.T) {
	doc := `[[provider]]
name = "example"
hosts = "mail.example.com"
imap = "imaps://mail.example.com:993"
min_tls = 1.2

[[listen]]
protocol = "imap"
address = "127.0.0.1:99999"
provider = "example"

[[listen]]
protocol = "pop3"
address = "127.0.0.1:1110"
provider = "example"
max_sessions = "ten"
allow_plaintext_auth = "yes"

[[listen]]
protocl = "smtp"
address = "127.0.0.1:1587"
provider = "example"
allow_clients = ["127.0.0.1/32", 7]
`
	_, err := Parse("f.toml", []byte(doc))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("Parse: %v", err)
	}
	want := []string{
		`f.toml:3: hosts (provider "example"): want a list of strings like ["a", "b"], not the string "mail.example.com"`,
		`f.toml:5: min_tls (provider "example"): want a quoted string, not the number 1.2`,
		`f.toml:9: address (listen 127.0.0.1:99999): "127.0.0.1:99999": bad port`,
		`f.toml:16: max_sessions (listen 127.0.0.1:1110): want a whole number, not the string "ten"`,
		`f.toml:17: allow_plaintext_auth (listen 127.0.0.1:1110): want true or false, not the string "yes"`,
		`f.toml:20: protocl (listen #3): unknown key in [listen] (did you mean "protocol"?)`,
		`f.toml:23: allow_clients (listen 127.0.0.1:1587): want a list of strings like ["a", "b"] (item 2 is the number 7), not the list ["127.0.0.1/32", 7]`,
	}
	if got := err.Error(); got != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	for _, goName := range []string{"config.", "[]string", "of type", "int64", "struct"} {
		if strings.Contains(err.Error(), goName) {
			t.Errorf("the errors show Go's %q", goName)
		}
	}
}

// TestNoFollowOnErrors: one bad field in a provider is one error, not one
// more for every listener that uses the provider.
func TestNoFollowOnErrors(t *testing.T) {
	doc := provider + "min_tls = \"1.7\"\n" + listener + strings.Replace(listener, "1143", "1144", 1)
	_, err := Parse("f.toml", []byte(doc))
	if err == nil || strings.Count(err.Error(), "\n") != 0 || !strings.Contains(err.Error(), `f.toml:5: min_tls (provider "p"): "1.7" is not a TLS version`) {
		t.Errorf("want the one min_tls error, got:\n%v", err)
	}
	// A misspelt table: its listeners do not add "no provider named".
	doc = strings.Replace(provider, "[[provider]]", "[[provder]]", 1) + listener
	_, err = Parse("f.toml", []byte(doc))
	if err == nil || strings.Contains(err.Error(), "no provider named") || !strings.Contains(err.Error(), `f.toml:1: [provder]: unknown table (did you mean "provider"?)`) {
		t.Errorf("misspelt table: %v", err)
	}
}

func TestStatusTable(t *testing.T) {
	c, err := Parse("f.toml", []byte(provider+listener+"[status]\naddress = \"localhost:1180\"\n"))
	if err != nil || c.Status == nil || c.Status.Address != "127.0.0.1:1180" || !c.Status.Access.Loopback {
		t.Fatalf("status: %+v, %v", c, err)
	}
	c, err = Parse("f.toml", []byte(provider+listener+"[status]\naddress = \"0.0.0.0:1180\"\nallow_clients = [\"192.168.1.0/24\"]\n"))
	if err != nil || c.Status.Access.Loopback || len(c.Status.Access.AllowClients) != 1 {
		t.Fatalf("LAN status: %+v, %v", c.Status, err)
	}
	bad(t, provider+listener+"[status]\naddress = \"192.168.1.5:1180\"\n", 11, "address (status)", "allow_clients")
	bad(t, provider+listener+"[status]\naddress = \"127.0.0.1:http\"\n", 11, "address (status)", "bad port")
	bad(t, provider+listener+"[status]\nadress = \"127.0.0.1:1180\"\n", 11, "adress", `did you mean "address"`)
	bad(t, provider+listener+"[status]\naddress = \"127.0.0.1:1143\"\n", 11, "address (status)", "also a listener's address")
	if c, err := Parse("f.toml", []byte(provider+listener)); err != nil || c.Status != nil {
		t.Errorf("no [status]: %+v, %v", c.Status, err)
	}
}

// TestDecodeKinds: every kind of field a File has decodes, a pointer field
// only when its key is present.
func TestDecodeKinds(t *testing.T) {
	var x struct {
		S  string    `toml:"s"`
		B  bool      `toml:"b"`
		I  int       `toml:"i"`
		L  []string  `toml:"l"`
		P  *[]string `toml:"p"`
		NP *[]string `toml:"np"`
	}
	d := newDoc("f.toml")
	errs := d.decodeTable("t", "t", "", map[string]any{"s": "x", "b": true, "i": int64(3), "l": []any{"a"}, "p": []any{}}, reflect.ValueOf(&x).Elem())
	if len(errs) != 0 || x.S != "x" || !x.B || x.I != 3 || len(x.L) != 1 || x.P == nil || len(*x.P) != 0 || x.NP != nil {
		t.Errorf("decoded %+v, errors %v", x, errs)
	}
	errs = d.decodeTable("t", "t", "", map[string]any{"p": "a"}, reflect.ValueOf(&x).Elem())
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), `p: want a list of strings like ["a", "b"], not the string "a"`) {
		t.Errorf("a pointer field of the wrong type: %v", errs)
	}
}
