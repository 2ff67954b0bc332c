// Package grafana holds stkgate's Grafana dashboard (stkgate.json) and the
// test that keeps it in step with the code.
package grafana

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stkgate/stkgate/events/kit/metrics"
)

// seriesName is a stkgate series named in a query.
var seriesName = regexp.MustCompile(`stkgate_[a-z0-9_]+`)

// TestDashboardQueriesRegisteredSeries: every series the dashboard queries
// is one the code registers (a histogram's _bucket, _sum and _count
// included), and every panel queries one.
func TestDashboardQueriesRegisteredSeries(t *testing.T) {
	b, err := os.ReadFile("stkgate.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("stkgate.json: %v", err)
	}
	if len(dash.Panels) == 0 {
		t.Fatal("stkgate.json has no panels")
	}
	registered := metrics.Names()
	for _, p := range dash.Panels {
		var names []string
		for _, tg := range p.Targets {
			names = append(names, seriesName.FindAllString(tg.Expr, -1)...)
		}
		if len(names) == 0 {
			t.Errorf("panel %q queries no stkgate series", p.Title)
		}
		for _, n := range names {
			if !slices.Contains(registered, n) && !slices.Contains(registered, histogramOf(n)) {
				t.Errorf("panel %q queries %s, which no code registers", p.Title, n)
			}
		}
	}
}

// histogramOf is the histogram a _bucket, _sum or _count series is of.
func histogramOf(n string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if h, ok := strings.CutSuffix(n, suffix); ok {
			return h
		}
	}
	return n
}
