package webhook

// A delivery task of the webhooks worker, on the STK_WEBHOOKS stream
// (dispatcher/webhooks): written by the worker's fan-out and by
// stkgate-admin webhook redeliver, read by the worker.
const (
	TaskStreamName = "STK_WEBHOOKS"
	// TaskSubjectAll: stkwh.task.<endpoint id>.
	TaskSubjectAll = "stkwh.task.>"
)

// TaskSubject is the subject of a task for endpointID.
func TaskSubject(endpointID string) string { return "stkwh.task." + endpointID }

// TaskMsgID is the Nats-Msg-Id of the task of an event for an endpoint: a
// fan-out run again never makes a second task for the same delivery.
func TaskMsgID(eventID, endpointID string) string { return eventID + ":" + endpointID }

// Task is a delivery task's body.
type Task struct {
	DeliveryID int64  `json:"delivery_id"`
	EndpointID string `json:"endpoint_id"`
	// Event is the event's envelope, exactly as in the STK stream: the body
	// delivered and signed.
	Event []byte `json:"event"`
	// Manual: an operator asked for this attempt (one, outside the
	// schedule).
	Manual bool `json:"manual,omitempty"`
	// URL is a request's callback_url, for a task of a client's
	// callback_url endpoint: it keys the breaker and the in-flight slots,
	// so that one merchant URL failing does not hold up the others. The
	// URL called is the delivery's, as recorded.
	URL string `json:"url,omitempty"`
}
