// Command bench-baseline is the bare engines the benchmark (deploy/bench)
// measures stkgate against: echo handlers that do only what the engine
// under each path must do, with nothing of stkgate's around it.
//
//	POST /accept                       decodes the request and publishes its bytes with ack to BENCH
//	POST /hooks/stk-push/<id>/<token>  decodes the callback and publishes its bytes with ack to BENCH_CB
//	GET  /poll/<id>                    one indexed read of stk_pushes by tracking id, as JSON
//	GET  /readyz                       200
//
// BENCH and BENCH_CB have the STK and STK_CALLBACKS streams' configuration
// under other names and subjects. It reads NATS_URL, DATABASE_URL and
// BASELINE_ADDR.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	_ "github.com/lib/pq" // the "postgres" driver
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stkgate/stkgate/events"
	"github.com/stkgate/stkgate/events/kit/service"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-baseline:", err)
		os.Exit(1)
	}
}

// run serves the baseline until SIGINT or SIGTERM: its streams made
// (createStreams), its routes (routes) on BASELINE_ADDR.
func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Profiled as the services are (make bench -profile), so that a
	// path's profile can be set beside its baseline's.
	if dir := os.Getenv(service.ProfileEnv); dir != "" {
		stopProfile, err := service.StartProfile(dir, "bench-baseline")
		if err != nil {
			return err
		}
		defer stopProfile(slog.Default())
	}
	nc, err := nats.Connect(os.Getenv("NATS_URL"))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if err := createStreams(ctx, js); err != nil {
		return err
	}
	db, err := sql.Open("postgres", os.Getenv("DATABASE_URL"))
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16)
	srv := &http.Server{Addr: os.Getenv("BASELINE_ADDR"), Handler: routes(js, db), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// createStreams makes BENCH and BENCH_CB: the STK and STK_CALLBACKS
// streams' configuration under other names and subjects.
func createStreams(ctx context.Context, js jetstream.JetStream) error {
	acc := events.StreamConfig(1)
	acc.Name, acc.Subjects = "BENCH", []string{"bench.>"}
	cb := events.CallbackStreamConfig(1)
	cb.Name, cb.Subjects = "BENCH_CB", []string{"benchcb.>"}
	for _, c := range []jetstream.StreamConfig{acc, cb} {
		if _, err := js.CreateOrUpdateStream(ctx, c); err != nil {
			return fmt.Errorf("stream %s: %w", c.Name, err)
		}
	}
	return nil
}

// routes is the baseline's handlers: /readyz, /accept, the callback path
// and /poll (poll).
func routes(js jetstream.JetStream, db *sql.DB) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.GET("/readyz", func(c echo.Context) error { return c.NoContent(http.StatusOK) })
	e.POST("/accept", func(c echo.Context) error {
		var req struct {
			Phone     string `json:"phone"`
			Amount    int64  `json:"amount"`
			Reference string `json:"reference"`
			Tag       string `json:"tag"`
		}
		id := uuid.NewString()
		return publish(c, js, "bench.requested."+id, id, &req, map[string]any{"success": true, "tracking_id": id})
	})
	e.POST("/hooks/stk-push/:id/:token", func(c echo.Context) error {
		var body struct {
			Body struct {
				StkCallback struct {
					MerchantRequestID string          `json:"MerchantRequestID"`
					CheckoutRequestID string          `json:"CheckoutRequestID"`
					ResultCode        json.Number     `json:"ResultCode"`
					ResultDesc        string          `json:"ResultDesc"`
					CallbackMetadata  json.RawMessage `json:"CallbackMetadata"`
				} `json:"stkCallback"`
			} `json:"Body"`
		}
		id := c.Param("id")
		return publish(c, js, "benchcb.received."+id, id, &body, map[string]any{"ResultCode": 0, "ResultDesc": "Accepted"})
	})
	e.GET("/poll/:id", poll(db))
	return e
}

// poll is one indexed read of stk_pushes by tracking id, as JSON.
func poll(db *sql.DB) echo.HandlerFunc {
	// Prepared, as the api's read is: the engine's best, one round trip a
	// read (unprepared, lib/pq makes two). On the first poll: the table
	// is the api's, made when it migrates.
	var get atomic.Pointer[sql.Stmt]
	prepared := func(ctx context.Context) (*sql.Stmt, error) {
		if s := get.Load(); s != nil {
			return s, nil
		}
		s, err := db.PrepareContext(ctx, `SELECT tracking_id, status, response_code, response_description,
			transaction_code, phone_number, amount, reference, created_at FROM stk_pushes WHERE tracking_id = $1`)
		if err != nil {
			return nil, err
		}
		if !get.CompareAndSwap(nil, s) {
			_ = s.Close() // another poll prepared it first
		}
		return get.Load(), nil
	}

	return func(c echo.Context) error {
		var r struct {
			TrackingID  string         `json:"tracking_id"`
			Status      int            `json:"status"`
			Code        sql.NullString `json:"response_code"`
			Description sql.NullString `json:"response_description"`
			Receipt     sql.NullString `json:"transaction_code"`
			Phone       string         `json:"phone"`
			Amount      int64          `json:"amount"`
			Reference   string         `json:"reference"`
			CreatedAt   time.Time      `json:"created_at"`
		}
		get, err := prepared(c.Request().Context())
		if err != nil {
			return err
		}
		err = get.QueryRowContext(c.Request().Context(), c.Param("id")).
			Scan(&r.TrackingID, &r.Status, &r.Code, &r.Description, &r.Receipt, &r.Phone, &r.Amount, &r.Reference, &r.CreatedAt)
		if errors.Is(err, sql.ErrNoRows) {
			return c.NoContent(http.StatusNotFound)
		} else if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, r)
	}
}

// publish decodes the request's body into v and publishes the body with
// ack under msgID, then answers ok.
func publish(c echo.Context, js jetstream.JetStream, subject, msgID string, v, ok any) error {
	body, err := io.ReadAll(io.LimitReader(c.Request().Body, 64<<10))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return c.NoContent(http.StatusBadRequest)
	}
	if _, err := js.Publish(c.Request().Context(), subject, body, jetstream.WithMsgID(msgID)); err != nil {
		return c.NoContent(http.StatusServiceUnavailable)
	}
	return c.JSON(http.StatusAccepted, ok)
}
