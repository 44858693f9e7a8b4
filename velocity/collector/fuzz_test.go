package collector

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"

	"github.com/tokenscale/tokenscale/velocity/engine"
	"github.com/tokenscale/tokenscale/velocity/store"
)

// replyTransport answers every request with the next of its bodies, as a Prometheus would, with no
// network in the way.
type replyTransport struct{ bodies [][]byte }

func (r *replyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	body := r.bodies[0]
	if len(r.bodies) > 1 {
		r.bodies = r.bodies[1:]
	}
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(bytes.NewReader(body)), Request: req}, nil
}

// checkRecorder passes what the source records to a real store, checking on the way that only pods
// the source may keep are recorded, at most twice a poll (a new pod's previous scrape and its newest),
// never in the future of the reply's newest sample.
type checkRecorder struct {
	t     *testing.T
	st    *store.Store
	polls map[store.PodKey]int
}

func (c *checkRecorder) Record(pod store.PodKey, at time.Time, snap *engine.Snapshot) {
	c.check(pod)
	if at.After(fuzzNow.Add(MaxClockSkew)) {
		c.t.Fatalf("recorded %v at %s, ahead of the clock (%s): it would read as fresh until the clock caught up", pod, at, fuzzNow)
	}
	c.st.Record(pod, at, snap)
}

func (c *checkRecorder) RecordError(pod store.PodKey, at time.Time, err error) {
	c.check(pod)
	c.st.RecordError(pod, at, err)
}

func (c *checkRecorder) Retain(keep func(store.PodKey) bool) { c.st.Retain(keep) }

// SetRateLimit passes the source's limit on, as the service's store takes it: without it the store held
// the pod to the absolute cap, and the check below on the pod's limit failed on a jump the source had
// been told was implausible.
func (c *checkRecorder) SetRateLimit(pod store.PodKey, l store.Limit) {
	if pod.Namespace == "" || pod.Name == "" || pod.Name == "dropped" {
		c.t.Fatalf("rate limit set for %v: a series without a pod, or one the source was told to drop", pod)
	}
	c.st.SetRateLimit(pod, l)
}

func (c *checkRecorder) check(pod store.PodKey) {
	if pod.Namespace == "" || pod.Name == "" || pod.Name == "dropped" {
		c.t.Fatalf("recorded %v: a series without a pod, or one the source was told to drop", pod)
	}
	if c.polls[pod]++; c.polls[pod] > 2 {
		c.t.Fatalf("recorded %v %d times in one poll", pod, c.polls[pod])
	}
}

// A Prometheus-compatible endpoint's reply is outside input: whatever it sends, two polls in a row
// neither panic nor record a pod the pod cache does not map, and every rate the store then serves is a
// finite, non-negative number (or an error), never NaN or a negative for unknown. Two replies are
// split on a NUL byte; a reply the client cannot decode is a poll error.
func FuzzPrometheusReply(f *testing.F) {
	// Two scrapes of pod p a poll apart, as a range query returns them, and a pod the cache does not map.
	reply := func(t0, t1 int, prompt, gen float64) string {
		return fmt.Sprintf(`{"status":"success","data":{"resultType":"matrix","result":[`+
			`{"metric":{"__name__":"vllm:prompt_tokens_total","namespace":"ns","pod":"p","engine":"0"},"values":[[%[1]d,"%[3]g"],[%[2]d,"%[4]g"]]},`+
			`{"metric":{"__name__":"vllm:generation_tokens_total","namespace":"ns","pod":"p","engine":"0"},"values":[[%[1]d,"%[5]g"],[%[2]d,"%[6]g"]]},`+
			`{"metric":{"__name__":"vllm:num_requests_waiting","namespace":"ns","pod":"p","engine":"0"},"values":[[%[1]d,"3"],[%[2]d,"2"]]},`+
			`{"metric":{"__name__":"vllm:num_requests_running","namespace":"ns","pod":"p","engine":"0"},"values":[[%[1]d,"8"],[%[2]d,"9"]]},`+
			`{"metric":{"__name__":"vllm:prompt_tokens_total","namespace":"ns","pod":"dropped"},"values":[[%[2]d,"5"]]}]}}`,
			t0, t1, prompt, prompt+15*3000, gen, gen+15*300)
	}
	later := reply(1700000015, 1700000030, 46000, 4510)
	f.Add(append(append([]byte(reply(1700000000, 1700000015, 1000, 10)), 0), later...))
	f.Add([]byte(`{"status":"success","data":{"resultType":"matrix","result":[null]}}`))
	f.Add([]byte(`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"vllm:prompt_tokens_total","namespace":"ns","pod":"p"},"values":[[1700000015,"NaN"],[1700000000,"-Inf"],[9e18,"1e308"]]}]}}`))
	f.Add([]byte(`{"status":"error","errorType":"bad_data","error":"x"}`))
	f.Add([]byte(`{"status":"error","errorType":"bad_data","error":"x\n\u001b[2J\u202ey"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		bodies := bytes.SplitN(b, []byte{0}, 2)
		c, err := promapi.NewClient(promapi.Config{Address: "http://prometheus.invalid", RoundTripper: limitedTransport{&replyTransport{bodies: bodies}, MaxPrometheusReply}})
		if err != nil {
			t.Fatal(err)
		}
		// As the service sets it for this source: Prometheus scrapes every 15 s or so.
		st := store.New(store.Options{StaleAfter: 45 * time.Second}, func() time.Time { return fuzzNow })
		rec := &checkRecorder{t: t, st: st}
		src := NewPrometheusSource(promv1.NewAPI(c), rec, time.Second, 45*time.Second, engine.Auto, func(k store.PodKey) bool { return k.Name != "dropped" })
		src.now = func() time.Time { return fuzzNow }
		src.RateLimit = func(store.PodKey) store.Limit { return store.Limit{Tokens: fuzzRateLimit} }
		for range bodies {
			rec.polls = map[store.PodKey]int{}
			// An error is an answer too (a panic is not), logged every round: short and printable, whatever
			// the reply's "error" held.
			if err := src.PollOnce(context.Background()); err != nil {
				if msg := err.Error(); len(msg) > 2*maxErrText || strings.IndexFunc(msg, func(r rune) bool { return r != ' ' && !unicode.IsPrint(r) }) >= 0 {
					t.Fatalf("an error of %d bytes, not short and printable: %.300q", len(msg), msg)
				}
			}
		}
		v, err := st.Get(store.PodKey{Namespace: "ns", Name: "p"})
		if err != nil {
			return
		}
		// Every number the store serves: finite, and non-negative but for the queues' growth, which is
		// negative while a queue drains.
		rv := reflect.ValueOf(v)
		for i := range rv.NumField() {
			f, name := rv.Field(i), rv.Type().Field(i).Name
			if f.Kind() != reflect.Float64 {
				continue
			}
			if x := f.Float(); math.IsNaN(x) || math.IsInf(x, 0) || (x < 0 && !strings.HasSuffix(name, "GrowthTPS")) {
				t.Fatalf("%s = %v served from Prometheus' reply", name, x)
			}
		}
		for name, h := range map[string]engine.Histogram{"TTFT": v.TTFT, "ITL": v.ITL} {
			if h.OK && (!(h.Count >= 0 && h.Count <= math.MaxFloat64) || !(h.Sum >= 0 && h.Sum <= math.MaxFloat64)) {
				t.Fatalf("%s window %+v served from Prometheus' reply", name, h)
			}
		}
		if v.PrefillTPS > fuzzRateLimit || v.DecodeTPS > fuzzRateLimit {
			t.Fatalf("rates %v, %v served above the pod's limit of %v", v.PrefillTPS, v.DecodeTPS, fuzzRateLimit)
		}
	})
}

// fuzzNow is the clock of FuzzPrometheusReply's source and store; fuzzRateLimit its pod's plausible rate.
var fuzzNow = time.Unix(1700000040, 0)

const fuzzRateLimit = 1e5
