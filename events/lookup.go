package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// LastMsg is the newest message on subject in stream s, like
// s.GetLastMsgForSubject, except that "not found" is never a replica's
// stale word.
//
// The streams allow direct gets (AllowDirect), which any replica answers: a
// follower a moment behind the leader says "not found" for a message the
// leader has already acknowledged. Where "not found" leads to an act that
// cannot be undone — a push sent, a 404 for an accepted payment, an outcome
// decided — that answer is asked again of the stream's leader
// (LastMsgFromLeader). A message found is found: replicas never invent one.
func LastMsg(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, subject string) (*jetstream.RawStreamMsg, error) {
	msg, err := s.GetLastMsgForSubject(ctx, subject)
	if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return msg, err
	}
	return LastMsgFromLeader(ctx, js, s.CachedInfo().Config.Name, subject)
}

// LastMsgFromLeader asks the stream's leader (the JetStream API's
// STREAM.MSG.GET, not a direct get) for the newest message on subject. It
// returns jetstream.ErrMsgNotFound when there is none.
func LastMsgFromLeader(ctx context.Context, js jetstream.JetStream, stream, subject string) (*jetstream.RawStreamMsg, error) {
	return msgFromLeader(ctx, js, stream, "last", subject, struct {
		LastFor string `json:"last_by_subj"`
	}{subject})
}

// FirstMsgFromLeader asks the stream's leader, as LastMsgFromLeader does,
// for the oldest message on subject (a filter, wildcards allowed). It
// returns jetstream.ErrMsgNotFound when there is none.
func FirstMsgFromLeader(ctx context.Context, js jetstream.JetStream, stream, subject string) (*jetstream.RawStreamMsg, error) {
	return msgFromLeader(ctx, js, stream, "first", subject, struct {
		NextFor string `json:"next_by_subj"`
	}{subject})
}

// msgFromLeader asks the leader of stream for the message STREAM.MSG.GET's
// request ask names: the which (first, last) on subject.
func msgFromLeader(ctx context.Context, js jetstream.JetStream, stream, which, subject string, ask any) (*jetstream.RawStreamMsg, error) {
	req, err := json.Marshal(ask)
	if err != nil {
		return nil, err
	}
	prefix := js.Options().APIPrefix
	if prefix == "" {
		prefix = jetstream.DefaultAPIPrefix
	}
	if !strings.HasSuffix(prefix, ".") {
		prefix += "."
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	resp, err := js.Conn().RequestWithContext(ctx, prefix+"STREAM.MSG.GET."+stream, req)
	if err != nil {
		return nil, fmt.Errorf("get %s %s from the leader of %s: %w", which, subject, stream, err)
	}
	var r struct {
		Error *struct {
			Code        int    `json:"code"`
			ErrorCode   uint16 `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
		Message *struct {
			Subject  string    `json:"subject"`
			Sequence uint64    `json:"seq"`
			Header   []byte    `json:"hdrs"`
			Data     []byte    `json:"data"`
			Time     time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return nil, fmt.Errorf("get %s %s from the leader of %s: %w", which, subject, stream, err)
	}
	if r.Error != nil {
		if r.Error.ErrorCode == uint16(jetstream.JSErrCodeMessageNotFound) {
			return nil, jetstream.ErrMsgNotFound
		}
		return nil, fmt.Errorf("get %s %s from the leader of %s: %s (%d)", which, subject, stream, r.Error.Description, r.Error.ErrorCode)
	}
	if r.Message == nil {
		return nil, fmt.Errorf("get %s %s from the leader of %s: %w", which, subject, stream, jetstream.ErrInvalidJetStreamResponse)
	}
	var hdr nats.Header
	if len(r.Message.Header) > 0 {
		if hdr, err = nats.DecodeHeadersMsg(r.Message.Header); err != nil {
			return nil, fmt.Errorf("get %s %s from the leader of %s: headers: %w", which, subject, stream, err)
		}
	}
	return &jetstream.RawStreamMsg{
		Subject:  r.Message.Subject,
		Sequence: r.Message.Sequence,
		Header:   hdr,
		Data:     r.Message.Data,
		Time:     r.Message.Time,
	}, nil
}
