package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"time"
)

// Event is one audit event, decoded: as it is written (an Observer gets
// it), or read back from a JSON line (ParseEvent). The two agree field for
// field, so that what watches a running mailproxy and what reads its log
// count the same things.
type Event struct {
	Time  time.Time
	Level slog.Level
	Msg   string // the event name, e.g. EventSessionStart
	// Fields are the event's other fields: strings, int64 numbers and
	// bools (a time, such as `since`, as its RFC 3339 string).
	Fields map[string]any
}

// Str returns a string field, or "".
func (e Event) Str(key string) string {
	s, _ := e.Fields[key].(string)
	return s
}

// Int returns a number field, or 0.
func (e Event) Int(key string) int64 {
	n, _ := e.Fields[key].(int64)
	return n
}

// Bool returns a bool field, or false.
func (e Event) Bool(key string) bool {
	b, _ := e.Fields[key].(bool)
	return b
}

// Observer is told of every audit event after it is written, whatever the
// log's level, from the goroutine that wrote it: it must be safe for
// concurrent use and return quickly (sessions wait for it). It gets what
// the log gets, so it never sees a credential or message content either.
type Observer func(Event)

// ParseEvent decodes one line of the audit log.
func ParseEvent(line []byte) (Event, error) {
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return Event{}, err
	}
	e := Event{Fields: map[string]any{}}
	for k, v := range m {
		switch k {
		case slog.TimeKey:
			s, _ := v.(string)
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return Event{}, fmt.Errorf("bad time %q", s)
			}
			e.Time = t
		case slog.LevelKey:
			s, _ := v.(string)
			if err := e.Level.UnmarshalText([]byte(s)); err != nil {
				return Event{}, fmt.Errorf("bad level %q", s)
			}
		case slog.MessageKey:
			e.Msg, _ = v.(string)
		default:
			if n, ok := v.(json.Number); ok {
				i, err := n.Int64()
				if err != nil {
					return Event{}, fmt.Errorf("field %s: %q is not a whole number", k, n)
				}
				v = i
			}
			e.Fields[k] = v
		}
	}
	if e.Msg == "" {
		return Event{}, fmt.Errorf("no %q field", slog.MessageKey)
	}
	return e, nil
}

// teeHandler writes records through the JSON handler (at the log's level)
// and gives every record to the observers as an Event.
type teeHandler struct {
	next      slog.Handler
	observers []Observer
	attrs     []slog.Attr // from WithAttrs: conn, proto
}

func (h *teeHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *teeHandler) Handle(ctx context.Context, r slog.Record) error {
	// Observers first: whatever the log shows is already counted on the
	// status page and in /metrics (a reader that sees the line and then
	// asks for the metrics must find it there).
	e := Event{Time: r.Time, Level: r.Level, Msg: r.Message, Fields: make(map[string]any, len(h.attrs)+r.NumAttrs())}
	for _, a := range h.attrs {
		e.Fields[a.Key] = attrValue(a.Value)
	}
	r.Attrs(func(a slog.Attr) bool {
		e.Fields[a.Key] = attrValue(a.Value)
		return true
	})
	for _, o := range h.observers {
		o(e)
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &teeHandler{next: h.next.WithAttrs(as), observers: h.observers, attrs: append(slices.Clip(h.attrs), as...)}
}

// WithGroup is not used by Audit; observers see grouped attributes
// ungrouped.
func (h *teeHandler) WithGroup(name string) slog.Handler {
	return &teeHandler{next: h.next.WithGroup(name), observers: h.observers, attrs: h.attrs}
}

// attrValue is a field's value as ParseEvent would read it back.
func attrValue(v slog.Value) any {
	v = v.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return v.String()
	case slog.KindInt64:
		return v.Int64()
	case slog.KindUint64:
		return int64(v.Uint64())
	case slog.KindBool:
		return v.Bool()
	case slog.KindTime:
		return v.Time().Format(time.RFC3339Nano)
	case slog.KindDuration:
		return int64(v.Duration())
	}
	return v.String()
}
