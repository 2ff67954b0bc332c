package events

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestDecodeAsAnswersAsDecodeOnARepeatedDataKey (adversarial review of
// 17661e4): DecodeAs is to accept what Decode accepts as an E, with the same
// event, and nothing else. A message whose "data" key is given twice is read
// by Decode from the last one (json.RawMessage is replaced), but DecodeAs
// decodes both into the same struct, so the first one's fields survive
// where the last one leaves them out: another event (a receipt the stored
// data does not hold), and a message Decode refuses (last data null) taken.
func TestDecodeAsAnswersAsDecodeOnARepeatedDataKey(t *testing.T) {
	const id = "550e8400-e29b-41d4-a716-446655440000"
	head := `{"specversion":"1.0","id":"x","source":"s","type":"stk.completed","subject":"` + id + `","time":"2024-03-21T11:30:01Z",`
	t.Run("another event", func(t *testing.T) {
		body := []byte(head +
			`"data":{"tracking_id":"` + id + `","result_code":"0","receipt":"RCP1","source":"callback"},` +
			`"data":{"tracking_id":"` + id + `","result_code":"1032","source":"callback"}}`)
		_, ev, err := Decode(body)
		if err != nil {
			t.Fatal(err)
		}
		env, err := DecodeAs[Completed](body)
		if err != nil {
			t.Fatalf("DecodeAs refused what Decode took: %v", err)
		}
		if diff := cmp.Diff(ev, env.Data); diff != "" {
			t.Errorf("DecodeAs read another event (-Decode +DecodeAs):\n%s", diff)
		}
	})
	t.Run("refused by Decode", func(t *testing.T) {
		body := []byte(head +
			`"data":{"tracking_id":"` + id + `","result_code":"0","receipt":"RCP1","source":"callback"},"data":null}`)
		_, _, err := Decode(body)
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("Decode = %v, want ErrMalformed", err)
		}
		if env, err := DecodeAs[Completed](body); err == nil {
			t.Errorf("DecodeAs took what Decode refused: %+v", env.Data)
		}
	})
}

// TestDecodeAsAnswersAsDecodeOnDataKeyVariants: encoding/json matches a
// key to the data field in any case and after its escapes are read, so a
// second data written "Data" or "\u0064ata" is a repeat as well.
func TestDecodeAsAnswersAsDecodeOnDataKeyVariants(t *testing.T) {
	const id = "550e8400-e29b-41d4-a716-446655440000"
	head := `{"specversion":"1.0","id":"x","source":"s","type":"stk.completed","subject":"` + id + `","time":"2024-03-21T11:30:01Z",`
	first := `"data":{"tracking_id":"` + id + `","result_code":"0","receipt":"RCP1","source":"callback"},`
	for _, key := range []string{`"Data"`, `"DATA"`, `"\u0064ata"`, `"d\u0061ta"`} {
		body := []byte(head + first + key + `:{"tracking_id":"` + id + `","result_code":"1032","source":"callback"}}`)
		_, ev, err := Decode(body)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		env, err := DecodeAs[Completed](body)
		if err != nil {
			t.Fatalf("%s: DecodeAs refused what Decode took: %v", key, err)
		}
		if diff := cmp.Diff(ev, env.Data); diff != "" {
			t.Errorf("%s: DecodeAs read another event (-Decode +DecodeAs):\n%s", key, diff)
		}
	}
}
