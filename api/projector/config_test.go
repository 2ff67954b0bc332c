package projector

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestConfigFromEnv(t *testing.T) {
	t.Parallel()
	base := map[string]string{
		"NATS_URL":     "nats://127.0.0.1:4222",
		"DATABASE_URL": "postgres://stk:secret@db:5432/stkgate",
	}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		m[k] = v
		return m
	}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		want    Config
		wantErr string
	}{
		{"defaults", base, Config{NATSURL: "nats://127.0.0.1:4222", DatabaseURL: "postgres://stk:secret@db:5432/stkgate", StreamReplicas: 1, BatchSize: 768}, ""},
		{"all set", with("PROJECTOR_BATCH", "64"), Config{NATSURL: "nats://127.0.0.1:4222", DatabaseURL: "postgres://stk:secret@db:5432/stkgate", StreamReplicas: 1, BatchSize: 64}, ""},
		{"replicas", with("NATS_STREAM_REPLICAS", "3"), Config{NATSURL: "nats://127.0.0.1:4222", DatabaseURL: "postgres://stk:secret@db:5432/stkgate", StreamReplicas: 3, BatchSize: 768}, ""},
		{"no NATS", with("NATS_URL", ""), Config{}, "NATS_URL: required"},
		{"no database", with("DATABASE_URL", " "), Config{}, "DATABASE_URL: required"},
		{"replicas not a number", with("NATS_STREAM_REPLICAS", "three"), Config{}, "NATS_STREAM_REPLICAS"},
		{"replicas too many", with("NATS_STREAM_REPLICAS", "7"), Config{}, "NATS_STREAM_REPLICAS"},
		{"replicas zero", with("NATS_STREAM_REPLICAS", "0"), Config{}, "NATS_STREAM_REPLICAS"},
		{"batch zero", with("PROJECTOR_BATCH", "0"), Config{}, "PROJECTOR_BATCH"},
		{"batch too large", with("PROJECTOR_BATCH", "5000"), Config{}, "PROJECTOR_BATCH"},
		{"batch fraction", with("PROJECTOR_BATCH", "2.5"), Config{}, "PROJECTOR_BATCH"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ConfigFromEnv(env(tc.env))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// tracing.FromEnv is tested in its package.
			tc.want.Tracing = got.Tracing
			if diff := cmp.Diff(tc.want, got, cmpopts.IgnoreUnexported(Config{})); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestConfigFromEnvNamesEveryProblem(t *testing.T) {
	t.Parallel()
	_, err := ConfigFromEnv(env(map[string]string{"PROJECTOR_BATCH": "x"}))
	for _, want := range []string{"NATS_URL", "DATABASE_URL", "PROJECTOR_BATCH"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to name %s", err, want)
		}
	}
}

func TestLogValueHidesSecrets(t *testing.T) {
	t.Parallel()
	cfg := Config{
		NATSURL:        "nats://app:natspw@n1:4222,nats://tok3n@n2:4222, nats://n3:4222",
		DatabaseURL:    "postgres://stk:dbpw@db/stkgate",
		StreamReplicas: 3,
		BatchSize:      128,
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("starting", "config", cfg)
	out := buf.String()
	for _, secret := range []string{"natspw", "tok3n", "dbpw"} {
		if strings.Contains(out, secret) {
			t.Errorf("log line shows %q: %s", secret, out)
		}
	}
	for _, want := range []string{`"batch_size":128`, `"stream_replicas":3`, "n1:4222", "n3:4222", "db/stkgate"} {
		if !strings.Contains(out, want) {
			t.Errorf("log line lacks %s: %s", want, out)
		}
	}
}
