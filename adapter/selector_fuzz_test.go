package adapter

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	apierr "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/tokenscale/tokenscale/velocity/store"
)

// FuzzSelectors checks both APIs' answers to any label selector and namespace a request carries (an HPA's
// or KEDA's spec, or anyone with kubectl get --raw): a 400, 404 or 503 with a short, printable error that
// is the same on a second ask, or values for exactly what the selector matches, none negative.
func FuzzSelectors(f *testing.F) {
	f.Add("pool=prefill", "llm", uint8(0))
	f.Add("workload in (llama-prefill,llama-prefil)", "llm", uint8(1))
	f.Add("role!=decode,pool notin (decode)", "llm", uint8(2))
	f.Add("llm-d.ai/role=prefill", "llm", uint8(3))
	f.Add("!pool,role", "\x1b[2J", uint8(4))
	f.Add("", "", uint8(5))
	f.Add("pool=embed", "\x1b[2J", uint8(6))
	external := sortedKeys(poolMetrics)
	pods := sortedKeys(podMetrics)
	// A pool configured for every namespace runs in any a request names, so a metric its role lacks is
	// refused naming the pool in that namespace: printable, whatever characters it holds (the fuzzer
	// found one unassigned code point written through as it was).
	for i := range external {
		f.Add("pool in (prefill,decode)", "ll\u05fbm\u202e", uint8(i))
	}
	f.Fuzz(func(t *testing.T, selector, namespace string, metric uint8) {
		sel, err := labels.Parse(selector)
		if err != nil {
			return // the API server refuses it before any provider sees it
		}
		src := fixture()
		checkErr := func(what string, err, again error) {
			t.Helper()
			var se *apierr.StatusError
			if !errors.As(err, &se) {
				t.Fatalf("%s: %v is no API status", what, err)
			}
			switch se.ErrStatus.Code {
			case http.StatusBadRequest, http.StatusNotFound, http.StatusServiceUnavailable:
			default:
				t.Fatalf("%s: status %d: %v", what, se.ErrStatus.Code, err)
			}
			msg := err.Error()
			if len(msg) > 1024 || !utf8.ValidString(msg) || strings.IndexFunc(msg, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }) >= 0 {
				t.Fatalf("%s: an error of %d bytes that is not short and printable: %.300q", what, len(msg), msg)
			}
			if again == nil || again.Error() != msg {
				t.Fatalf("%s: asked again, %v; first %v", what, again, err)
			}
		}

		m := external[int(metric)%len(external)]
		ask := func() (int, error) {
			list, err := NewExternal(src).GetExternalMetric(context.Background(), namespace, sel, provider.ExternalMetricInfo{Metric: m})
			if err != nil {
				return 0, err
			}
			for i, it := range list.Items {
				if !sel.Matches(labels.Set(it.MetricLabels)) || it.Value.Sign() < 0 || namespace != "llm" {
					t.Fatalf("external %s for %q in %q: item %+v", m, selector, namespace, it)
				}
				if i > 0 && list.Items[i-1].MetricLabels[LabelPool] >= it.MetricLabels[LabelPool] {
					t.Fatalf("external %s: pools out of order or twice: %+v", m, list.Items)
				}
			}
			return len(list.Items), nil
		}
		if n, err := ask(); err != nil {
			_, again := ask()
			checkErr("external "+m, err, again)
		} else if n == 0 {
			t.Fatalf("external %s for %q: an empty answer, not a 404", m, selector)
		}

		pm := pods[int(metric)%len(pods)]
		askPods := func() error {
			list, err := NewProvider(src, nil).GetMetricBySelector(context.Background(), namespace, sel, info("pods", pm), labels.Everything())
			if err != nil {
				return err
			}
			for _, it := range list.Items {
				ls, ok := src.snap.PodLabels[store.PodKey{Namespace: it.DescribedObject.Namespace, Name: it.DescribedObject.Name}]
				if it.DescribedObject.Namespace != namespace || !ok || !sel.Matches(labels.Set(ls)) || it.Value.Sign() < 0 {
					t.Fatalf("pods %s for %q in %q: item %+v", pm, selector, namespace, it)
				}
			}
			if len(list.Items) == 0 {
				t.Fatalf("pods %s for %q: an empty answer, not a 404", pm, selector)
			}
			return nil
		}
		if err := askPods(); err != nil {
			checkErr("pods "+pm, err, askPods())
		}
	})
}
