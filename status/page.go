package status

import (
	"fmt"
	"html/template"
	"io"
	"slices"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"

	"mailproxy/proxy"
)

// RefreshSeconds is how often the page reloads itself.
const RefreshSeconds = 5

// Page is what the status page shows.
type Page struct {
	Now, Started time.Time
	Listeners    []proxy.ListenerInfo
	Sessions     []proxy.SessionInfo
	Providers    []ProviderTLS
	Refusals     []Refusal
	Counters     []Counter
	Refresh      int
}

// Counter is one sample of a metric, for the page.
type Counter struct {
	Name, Labels string
	Value        float64
}

// page assembles the page from the collector and the registry.
func (c *Collector) page(listeners []proxy.ListenerInfo, sessions []proxy.SessionInfo) (*Page, error) {
	p := &Page{Now: time.Now(), Started: c.started, Listeners: listeners, Sessions: sessions,
		Providers: c.Providers(), Refusals: c.Refusals(), Refresh: RefreshSeconds}
	families, err := c.Registry.Gather()
	if err != nil {
		return nil, err
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			lbl := strings.Join(labels, " ")
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				p.Counters = append(p.Counters, Counter{f.GetName(), lbl, m.GetCounter().GetValue()})
			case dto.MetricType_GAUGE:
				p.Counters = append(p.Counters, Counter{f.GetName(), lbl, m.GetGauge().GetValue()})
			case dto.MetricType_HISTOGRAM:
				p.Counters = append(p.Counters, Counter{f.GetName() + "_count", lbl, float64(m.GetHistogram().GetSampleCount())},
					Counter{f.GetName() + "_sum", lbl, m.GetHistogram().GetSampleSum()})
			}
		}
	}
	slices.SortStableFunc(p.Counters, func(a, b Counter) int { return strings.Compare(a.Name, b.Name) })
	return p, nil
}

// Render writes the page as HTML.
func (p *Page) Render(w io.Writer) error { return pageTemplate.Execute(w, p) }

var funcs = template.FuncMap{
	"ago": func(now, t time.Time) string { return round(now.Sub(t)).String() },
	"date": func(t time.Time) string {
		if t.IsZero() {
			return "unknown"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"days": func(now, t time.Time) int { return int(t.Sub(now).Hours() / 24) },
	"bytes": func(n int64) string {
		switch {
		case n >= 10<<20:
			return fmt.Sprintf("%d MiB", n>>20)
		case n >= 10<<10:
			return fmt.Sprintf("%d KiB", n>>10)
		}
		return fmt.Sprintf("%d B", n)
	},
	"num": func(v float64) string { return fmt.Sprintf("%.6g", v) },
}

func round(d time.Duration) time.Duration {
	if d > time.Minute {
		return d.Round(time.Second)
	}
	return d.Round(100 * time.Millisecond)
}

var pageTemplate = template.Must(template.New("status").Funcs(funcs).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{{.Refresh}}">
<meta name="referrer" content="no-referrer">
<title>mailproxy status</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; } th, td { padding: .2em .7em; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #060; } .bad { color: #a00; } .quiet { color: #777; }
</style>
</head>
<body>
<h1>mailproxy status</h1>
<p class="quiet">Running since {{date .Started}} ({{ago .Now .Started}}); this page reloads every {{.Refresh}} s. Metrics: <a href="/metrics">/metrics</a>.</p>

<h2>Listeners</h2>
<table id="listeners">
<tr><th>address</th><th>protocol</th><th>provider</th><th>upstream</th><th>sessions</th></tr>
{{range .Listeners}}<tr class="listener" data-address="{{.Address}}"><td>{{.Address}}{{if .Retired}} <span class="quiet">(removed, finishing)</span>{{end}}</td><td>{{.Proto}}</td><td>{{.Provider}}</td><td>{{.Upstream}}</td><td class="n">{{.Active}}</td></tr>
{{end}}</table>

<h2>Sessions</h2>
{{if .Sessions}}<table id="sessions">
<tr><th>app address</th><th>protocol</th><th>provider</th><th>user</th><th>state</th><th>since</th><th>bytes up</th><th>bytes down</th></tr>
{{range .Sessions}}<tr class="session" data-conn="{{.ID}}"><td>{{.Client}}</td><td>{{.Proto}}</td><td>{{.Provider}}</td><td class="user">{{.User}}</td><td>{{if .LoggedIn}}<span class="ok">logged in</span>{{else}}before login{{end}}</td><td>{{ago $.Now .Since}}</td><td class="n" data-bytes-up="{{.BytesUp}}">{{bytes .BytesUp}}</td><td class="n" data-bytes-down="{{.BytesDown}}">{{bytes .BytesDown}}</td></tr>
{{end}}</table>{{else}}<p id="sessions" class="quiet">No session is running.</p>{{end}}

<h2>Providers: the latest TLS</h2>
{{if .Providers}}<table id="providers">
<tr><th>provider</th><th>host</th><th>TLS</th><th>suite</th><th>group</th><th>certificate expires</th><th>trust</th><th>last handshake</th></tr>
{{range .Providers}}<tr class="provider" data-provider="{{.Provider}}"><td>{{.Provider}}</td><td>{{.Host}}</td><td class="tls-version">{{.Version}}</td><td class="cipher">{{.Cipher}}</td><td class="group">{{.Group}}</td><td class="expires">{{date .NotAfter}}{{if not .NotAfter.IsZero}} ({{days $.Now .NotAfter}} days){{end}}</td><td class="trust">{{if .Verified}}<span class="ok">chain verified</span>{{else}}<span class="bad">not verified</span>{{end}}{{if eq .Pin "ok"}}, pin matched{{end}}{{if .Trust}}, root on first use: {{.Trust}}{{end}}</td><td>{{ago $.Now .At}} ago{{if ge .HandshakeMillis 0}}, {{.HandshakeMillis}} ms{{end}}</td></tr>
{{end}}</table>{{else}}<p id="providers" class="quiet">No handshake with a provider yet.</p>{{end}}

<h2>The latest refusals</h2>
{{if .Refusals}}<table id="refusals">
<tr><th>when</th><th>reason</th><th>host</th><th>protocol</th><th>client</th><th>detail</th></tr>
{{range .Refusals}}<tr class="refusal" data-reason="{{.Reason}}"><td>{{date .At}}</td><td class="reason">{{.Reason}}</td><td>{{.Host}}</td><td>{{.Proto}}</td><td>{{.Client}}</td><td class="detail">{{if .Aggregated}}{{.Count}} more like: {{end}}{{.Detail}}</td></tr>
{{end}}</table>{{else}}<p id="refusals" class="quiet">Nothing refused.</p>{{end}}

<h2>Counters since start</h2>
<table id="counters">
<tr><th>metric</th><th>labels</th><th>value</th></tr>
{{range .Counters}}<tr class="counter" data-name="{{.Name}}"><td>{{.Name}}</td><td>{{.Labels}}</td><td class="n">{{num .Value}}</td></tr>
{{end}}</table>
</body>
</html>
`))
