package metrics

import dto "github.com/prometheus/client_model/go"

// Value is the sum of the samples of the counter or gauge name whose
// labels include every pair of labels ("key", "value", …), or a
// histogram's count of observations; 0 when there are none. For tests and
// tools: it gathers the whole registry.
func (r *Registry) Value(name string, labels ...string) float64 {
	if r == nil {
		return 0
	}
	families, err := r.reg.Gather()
	if err != nil {
		return 0
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
