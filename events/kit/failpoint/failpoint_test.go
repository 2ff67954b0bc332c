package failpoint

import (
	"os"
	"os/exec"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want map[string]float64
		bad  bool
	}{
		{in: "", want: map[string]float64{}},
		{in: "a=0.5", want: map[string]float64{"a": 0.5}},
		{in: " a = 1 , b=0 ,", want: map[string]float64{"a": 1, "b": 0}},
		{in: "a", bad: true},
		{in: "a=", bad: true},
		{in: "=0.5", bad: true},
		{in: "a=1.5", bad: true},
		{in: "a=-0.1", bad: true},
		{in: "a=NaN", bad: true},
	}
	for _, tc := range tests {
		got, err := Parse(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("Parse(%q) = %v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || len(got) != len(tc.want) {
			t.Errorf("Parse(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			continue
		}
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("Parse(%q)[%q] = %v, want %v", tc.in, k, got[k], v)
			}
		}
	}
}

// TestCrash runs this test binary again with the point enabled: it must
// exit with ExitCode at the point, and pass it when the point is off.
func TestCrash(t *testing.T) {
	if os.Getenv("FAILPOINT_CHILD") == "1" {
		Crash("other")
		Crash(CallbackAfterKeep)
		os.Exit(0)
	}
	for _, tc := range []struct {
		env  string
		code int
	}{
		{CallbackAfterKeep + "=1", ExitCode},
		{CallbackAfterKeep + "=0", 0},
		{"", 0},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrash$")
		cmd.Env = append(os.Environ(), "FAILPOINT_CHILD=1", Env+"="+tc.env)
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code {
			t.Errorf("%s=%q: exit %d, want %d", Env, tc.env, code, tc.code)
		}
	}
}
