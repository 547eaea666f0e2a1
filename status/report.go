package status

import (
	"bufio"
	"cmp"
	"fmt"
	"html/template"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"mailproxy/policy"
)

// Report summarises an audit log (`mailproxy report`): who used which
// provider, the TLS seen, and every refusal, grouped.
type Report struct {
	Since    time.Time // events before it were left out; zero: none
	From, To time.Time // the first and last event counted
	// Lines were read; Skipped of them are not audit events (other output
	// sharing the stream) or fall before Since.
	Lines, Skipped int
	Events         int

	Sessions           int
	BytesUp, BytesDown int64
	// SessionsBy counts sessions by app address (the client's IP, no
	// port) and provider: the one dialled, else the listener's.
	SessionsBy []Count
	LoginsOK   int
	LoginsFail int
	TLSVersion []Count
	Suites     []Count
	Groups     []Count
	Refusals   []RefusalGroup
	// RefusalTotal counts every refusal: an aggregated event stands for
	// its count.
	RefusalTotal int64
}

// Count is how often a key was seen.
type Count struct {
	Key   []string
	N     int64
	Share float64 // of the largest count in its list, for charts
}

// RefusalGroup is every refusal of one reason about one host.
type RefusalGroup struct {
	Reason, Host string
	N            int64
	First, Last  time.Time
	Detail       string // of the latest
}

// ReadReport reads an audit log and summarises the events at or after
// since (zero: all).
func ReadReport(r io.Reader, since time.Time) (*Report, error) {
	rep := &Report{Since: since}
	type session struct{ app, provider string }
	// conns are the sessions under way in the log, counted into by when
	// they end (or at the end of the log), so that memory follows the
	// sessions open at once, not the length of the log.
	conns := map[string]*session{}
	by := map[[2]string]int64{}
	count := func(s *session) { by[[2]string{s.app, s.provider}]++ }
	tls := map[string]map[string]int64{"version": {}, "suite": {}, "group": {}}
	refusals := map[[2]string]*RefusalGroup{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20) // a panic's stack is one long line
	for sc.Scan() {
		rep.Lines++
		e, err := policy.ParseEvent(sc.Bytes())
		if err != nil || e.Time.IsZero() || (!since.IsZero() && e.Time.Before(since)) {
			rep.Skipped++
			continue
		}
		rep.Events++
		if rep.From.IsZero() || e.Time.Before(rep.From) {
			rep.From = e.Time
		}
		if e.Time.After(rep.To) {
			rep.To = e.Time
		}
		id := e.Str("conn")
		switch e.Msg {
		case policy.EventSessionStart:
			rep.Sessions++
			app := e.Str("client")
			if i := strings.LastIndexByte(app, ':'); i > 0 {
				app = strings.Trim(app[:i], "[]")
			}
			provider := e.Str("provider")
			if provider == "" {
				provider = "?"
			}
			if s := conns[id]; s != nil {
				count(s) // ids are random, not unique forever: its end is not in the log
			}
			conns[id] = &session{app, provider}
		case policy.EventUpstreamTLS:
			if s := conns[id]; s != nil && e.Str("provider") != "" {
				s.provider = e.Str("provider")
			}
			tls["version"][e.Str("tls_version")]++
			tls["suite"][e.Str("cipher")]++
			tls["group"][e.Str("group")]++
		case policy.EventAuth:
			if e.Str("result") == "ok" {
				rep.LoginsOK++
			} else {
				rep.LoginsFail++
			}
		case policy.EventSessionEnd:
			if s := conns[id]; s != nil {
				count(s)
				delete(conns, id)
			}
			rep.BytesUp += e.Int("bytes_up")
			rep.BytesDown += e.Int("bytes_down")
		case policy.EventDenied:
			n := int64(1)
			if c, ok := e.Fields["count"].(int64); ok {
				n = c
			}
			rep.RefusalTotal += n
			k := [2]string{e.Str("reason"), e.Str("host")}
			g := refusals[k]
			if g == nil {
				g = &RefusalGroup{Reason: k[0], Host: k[1], First: e.Time}
				refusals[k] = g
			}
			g.N += n
			if e.Time.Before(g.First) {
				g.First = e.Time
			}
			if !e.Time.Before(g.Last) {
				g.Last, g.Detail = e.Time, e.Str("detail")
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading the audit log: %w", err)
	}
	for _, s := range conns {
		count(s)
	}
	for k, n := range by {
		rep.SessionsBy = append(rep.SessionsBy, Count{Key: []string{k[0], k[1]}, N: n})
	}
	rep.SessionsBy = ranked(rep.SessionsBy)
	flat := func(m map[string]int64) []Count {
		var out []Count
		for k, n := range m {
			out = append(out, Count{Key: []string{k}, N: n})
		}
		return ranked(out)
	}
	rep.TLSVersion, rep.Suites, rep.Groups = flat(tls["version"]), flat(tls["suite"]), flat(tls["group"])
	for _, g := range refusals {
		rep.Refusals = append(rep.Refusals, *g)
	}
	slices.SortFunc(rep.Refusals, func(a, b RefusalGroup) int {
		return cmp.Or(cmp.Compare(b.N, a.N), strings.Compare(a.Reason, b.Reason), strings.Compare(a.Host, b.Host))
	})
	return rep, nil
}

// ranked sorts counts, largest first, and sets their shares.
func ranked(cs []Count) []Count {
	slices.SortFunc(cs, func(a, b Count) int {
		return cmp.Or(cmp.Compare(b.N, a.N), slices.Compare(a.Key, b.Key))
	})
	for i := range cs {
		cs[i].Share = float64(cs[i].N) / float64(cs[0].N)
	}
	return cs
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// WriteText prints the report for a terminal.
func (r *Report) WriteText(w io.Writer, name string) error {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "%s: %d events from %s to %s", name, r.Events, stamp(r.From), stamp(r.To))
	if !r.Since.IsZero() {
		fmt.Fprintf(tw, " (since %s)", stamp(r.Since))
	}
	fmt.Fprintln(tw)
	if r.Skipped > 0 {
		fmt.Fprintf(tw, "%d of %d lines skipped (not audit events, or earlier)\n", r.Skipped, r.Lines)
	}
	fmt.Fprintf(tw, "\nSessions: %d (bytes up %d, down %d); logins: %d ok, %d failed\n", r.Sessions, r.BytesUp, r.BytesDown, r.LoginsOK, r.LoginsFail)
	if len(r.SessionsBy) > 0 {
		fmt.Fprintln(tw, "  app address\tprovider\tsessions")
		for _, c := range r.SessionsBy {
			fmt.Fprintf(tw, "  %s\t%s\t%d\n", policy.Escape(c.Key[0]), policy.Escape(c.Key[1]), c.N)
		}
	}
	for _, l := range []struct {
		title string
		cs    []Count
	}{{"TLS versions", r.TLSVersion}, {"Suites", r.Suites}, {"Groups", r.Groups}} {
		fmt.Fprintf(tw, "\n%s:\n", l.title)
		if len(l.cs) == 0 {
			fmt.Fprintln(tw, "  none")
		}
		for _, c := range l.cs {
			fmt.Fprintf(tw, "  %s\t%d\n", policy.Escape(c.Key[0]), c.N)
		}
	}
	fmt.Fprintf(tw, "\nRefusals: %d\n", r.RefusalTotal)
	if len(r.Refusals) > 0 {
		fmt.Fprintln(tw, "  reason\thost\tcount\tfirst\tlast\tlatest detail")
		for _, g := range r.Refusals {
			host := g.Host
			if host == "" {
				host = "-"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%s\n", policy.Escape(g.Reason), policy.Escape(host), g.N, stamp(g.First), stamp(g.Last), policy.Escape(g.Detail))
		}
	}
	return tw.Flush()
}

// WriteHTML writes the report as one self-contained page: inline styles
// and SVG charts, no script, nothing loaded from elsewhere.
func (r *Report) WriteHTML(w io.Writer, name string) error {
	return reportTemplate.Execute(w, struct {
		*Report
		Name string
	}{r, name})
}

var reportFuncs = template.FuncMap{
	"stamp": stamp,
	"join":  func(k []string) string { return strings.Join(k, " · ") },
	// bar is the width of a bar in the charts, in SVG units of 400.
	"bar": func(share float64) int { return max(1, int(share*400)) },
	"y":   func(i int) int { return i * 22 },
	"h":   func(n int) int { return n*22 + 4 },
}

var reportTemplate = template.Must(template.New("report").Funcs(reportFuncs).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>mailproxy report: {{.Name}}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; } th, td { padding: .2em .7em; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.n { text-align: right; }
svg text { font: 12px system-ui, sans-serif; }
</style>
</head>
<body>
<h1>mailproxy report: {{.Name}}</h1>
<p>{{.Events}} events from {{stamp .From}} to {{stamp .To}}{{if not .Since.IsZero}} (since {{stamp .Since}}){{end}}.{{if .Skipped}} {{.Skipped}} of {{.Lines}} lines skipped (not audit events, or earlier).{{end}}</p>
<p id="totals">Sessions: <b id="sessions">{{.Sessions}}</b> (bytes up {{.BytesUp}}, down {{.BytesDown}}); logins: {{.LoginsOK}} ok, {{.LoginsFail}} failed; refusals: <b id="refusal-total">{{.RefusalTotal}}</b>.</p>
{{define "chart"}}{{if .}}<svg width="760" height="{{h (len .)}}" role="img">{{range $i, $c := .}}<g transform="translate(0,{{y $i}})"><text x="0" y="15">{{join $c.Key}}</text><rect x="300" y="3" width="{{bar $c.Share}}" height="16" fill="#4a7ab5"/><text x="{{bar $c.Share}}" dx="306" y="15">{{$c.N}}</text></g>{{end}}</svg>{{else}}<p>none</p>{{end}}{{end}}
<h2>Sessions by app address and provider</h2>
{{template "chart" .SessionsBy}}
<h2>TLS versions</h2>
{{template "chart" .TLSVersion}}
<h2>Suites</h2>
{{template "chart" .Suites}}
<h2>Groups</h2>
{{template "chart" .Groups}}
<h2>Refusals by reason and host</h2>
{{if .Refusals}}<table id="refusals">
<tr><th>reason</th><th>host</th><th>count</th><th>first</th><th>last</th><th>latest detail</th></tr>
{{range .Refusals}}<tr><td>{{.Reason}}</td><td>{{.Host}}</td><td class="n">{{.N}}</td><td>{{stamp .First}}</td><td>{{stamp .Last}}</td><td>{{.Detail}}</td></tr>
{{end}}</table>{{else}}<p>Nothing refused.</p>{{end}}
</body>
</html>
`))
