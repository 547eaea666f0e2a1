package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"mailproxy/policy"
)

// decode fills f from the generic document m (as go-toml decodes it into
// a map), one field at a time, so that a value of the wrong type is one
// error among the others — with its line, key and value, in words a user
// reads — rather than the end of checking. Keys the File does not know
// were reported by index and are skipped here. The paths of fields that
// failed are recorded in d.bad, so that build does not report their
// consequences (a missing value) a second time.
func (d *doc) decode(m map[string]any, f *File) Errors {
	var errs Errors
	fv := reflect.ValueOf(f).Elem()
	for i := range fv.NumField() {
		field := fv.Type().Field(i)
		name := field.Tag.Get("toml")
		raw, has := m[name]
		if !has {
			continue
		}
		switch field.Type.Kind() {
		case reflect.Struct: // [log], [limits], [status]
			t, ok := raw.(map[string]any)
			if !ok {
				continue // reported by index: written as a value, not a table
			}
			errs = append(errs, d.decodeTable(name, name, "", t, fv.Field(i))...)
		case reflect.Slice: // [[provider]], [[listen]]
			list, ok := raw.([]any)
			if !ok {
				continue
			}
			dst := reflect.MakeSlice(field.Type, len(list), len(list))
			for j, e := range list {
				t, ok := e.(map[string]any)
				if !ok {
					continue
				}
				errs = append(errs, d.decodeTable(name, fmt.Sprintf("%s.%d", name, j), entryName(name, j, t), t, dst.Index(j))...)
			}
			fv.Field(i).Set(dst)
		}
	}
	return errs
}

// entryName is how messages name entry j of [[provider]] or [[listen]],
// as build does: by its name or address when it has one.
func entryName(table string, j int, t map[string]any) string {
	switch table {
	case "provider":
		if n, ok := t["name"].(string); ok && n != "" {
			return fmt.Sprintf("provider %q", n)
		}
	case "listen":
		if a, ok := t["address"].(string); ok && a != "" {
			return "listen " + a
		}
	}
	return fmt.Sprintf("%s #%d", table, j+1)
}

// decodeTable fills the struct dst from table t; path is its place in the
// document ("provider.0"), who its name in messages ("" for a plain table).
func (d *doc) decodeTable(table, path, who string, t map[string]any, dst reflect.Value) Errors {
	var errs Errors
	for i := range dst.NumField() {
		field := dst.Type().Field(i)
		key := field.Tag.Get("toml")
		raw, has := t[key]
		if !has {
			continue
		}
		p := path + "." + key
		if sub := subTable(dst.Field(i)); sub.IsValid() {
			// A table inside the entry ([provider.oauth2]).
			if st, ok := raw.(map[string]any); ok {
				for _, e := range d.decodeTable(table, p, who, st, sub) {
					e.Key = key + "." + e.Key
					errs = append(errs, e)
				}
				dst.Field(i).Set(sub.Addr())
				continue
			}
		}
		if err := assign(dst.Field(i), raw); err != "" {
			display := key
			if who != "" {
				display += " (" + who + ")"
			}
			d.bad[p] = true
			errs = append(errs, d.at(p, display, "%s, not %s", err, shown(key, raw)))
		}
	}
	return errs
}

// subTable is a new struct for a field that holds a pointer to a table's
// struct, or the invalid Value for any other field.
func subTable(f reflect.Value) reflect.Value {
	if f.Kind() == reflect.Pointer && f.Type().Elem().Kind() == reflect.Struct {
		return reflect.New(f.Type().Elem()).Elem()
	}
	return reflect.Value{}
}

// assign stores v in dst when its type fits, else says what was wanted.
// A pointer field is set (to a new value) when the key is present.
func assign(dst reflect.Value, v any) (want string) {
	switch dst.Kind() {
	case reflect.Pointer:
		p := reflect.New(dst.Type().Elem())
		if want := assign(p.Elem(), v); want != "" {
			return want
		}
		dst.Set(p)
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			return "want a quoted string"
		}
		dst.SetString(s)
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			return "want true or false"
		}
		dst.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, ok := v.(int64)
		if !ok {
			return "want a whole number"
		}
		if dst.OverflowInt(n) {
			return "want a smaller number"
		}
		dst.SetInt(n)
	case reflect.Slice: // []string
		list, ok := v.([]any)
		if !ok {
			return `want a list of strings like ["a", "b"]`
		}
		out := make([]string, len(list))
		for i, e := range list {
			s, ok := e.(string)
			if !ok {
				return fmt.Sprintf(`want a list of strings like ["a", "b"] (item %d is %s)`, i+1, describe(e))
			}
			out[i] = s
		}
		dst.Set(reflect.ValueOf(out))
	case reflect.Struct:
		return "want a table"
	default:
		return "unsupported field" // a File field of a kind decode does not know
	}
	return ""
}

// secretKeys hold credentials: a message about a value of the wrong type
// names its type only, never the value.
var secretKeys = map[string]bool{"via_password": true, "client_secret": true}

// urlKeys hold URLs, which may carry a user name and password
// ("socks5h://me:secret@127.0.0.1:9050"): a message shows their strings
// without them (policy.RedactURL).
var urlKeys = map[string]bool{"imap": true, "pop3": true, "smtp": true, "via": true,
	"auth_url": true, "token_url": true, "device_auth_url": true}

// shown is how a message shows the value of key: described (a URL without
// its credentials), or for a secret key only its kind.
func shown(key string, v any) string {
	if urlKeys[key] {
		return describe(redactStrings(v))
	}
	if !secretKeys[key] {
		return describe(v)
	}
	switch v.(type) {
	case string:
		return "a string"
	case int64, float64:
		return "a number"
	case bool:
		return "true or false"
	case []any:
		return "a list"
	case map[string]any:
		return "a table"
	}
	return "a date or time"
}

// redactStrings is v with every string in it, at any depth, passed
// through policy.RedactURL.
func redactStrings(v any) any {
	switch x := v.(type) {
	case string:
		return policy.RedactURL(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = redactStrings(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = redactStrings(e)
		}
		return out
	}
	return v
}

// describe names a TOML value's type and shows it, for messages.
func describe(v any) string {
	switch x := v.(type) {
	case string:
		return "the string " + strconv.Quote(x)
	case int64:
		return "the number " + strconv.FormatInt(x, 10)
	case float64:
		return "the number " + strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		return "the value " + strconv.FormatBool(x)
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = strings.TrimPrefix(strings.TrimPrefix(strings.TrimPrefix(describe(e), "the string "), "the number "), "the value ")
		}
		s := "the list [" + strings.Join(parts, ", ") + "]"
		if len(s) > 80 {
			s = s[:77] + "..."
		}
		return s
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("the date or time %v", v)
}
