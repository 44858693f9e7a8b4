package adapter

import (
	"fmt"
	"net/http"
	"strings"

	apierr "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/endpoints/handlers/responsewriters"
	"k8s.io/metrics/pkg/apis/custom_metrics"
	"k8s.io/metrics/pkg/apis/external_metrics"
	cmapiserver "sigs.k8s.io/custom-metrics-apiserver/pkg/apiserver"
)

// selectorParams are the query parameters of the metrics APIs that hold a selector, and how each parses.
var selectorParams = []struct {
	name  string
	parse func(string) error
}{
	{"labelSelector", func(s string) error { _, err := labels.Parse(s); return err }},
	{"metricLabelSelector", func(s string) error { _, err := labels.Parse(s); return err }},
	{"fieldSelector", func(s string) error { _, err := fields.ParseSelector(s); return err }},
}

// CheckSelectors answers a request to the metrics APIs whose selector does not parse with a 400 of short,
// printable text, before custom-metrics-apiserver reads it: the library answers a metricLabelSelector
// that does not parse with a 500, as if the adapter had failed, and the parser's message repeats a token
// of the selector whole ("found 'ccc…'", up to the 1 MiB a request line may hold). It sits inside
// authentication and authorization, so a caller who may not read the APIs is still refused for that first.
func CheckSelectors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if metricsAPI(r.URL.Path) {
			q := r.URL.Query()
			for _, p := range selectorParams {
				for _, v := range q[p.name] {
					if err := p.parse(v); err != nil {
						msg := fmt.Sprintf("%s %s does not parse: %s", p.name, quote(v), clip(err.Error()))
						responsewriters.ErrorNegotiated(bound(apierr.NewBadRequest(msg)), cmapiserver.Codecs, schema.GroupVersion{Version: "v1"}, w, r)
						return
					}
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// The paths of the metrics APIs this adapter serves.
const (
	customPrefix   = "/apis/" + custom_metrics.GroupName + "/"
	externalPrefix = "/apis/" + external_metrics.GroupName + "/"
)

// metricsAPI reports whether path is under one of the metrics APIs this adapter serves.
func metricsAPI(path string) bool {
	return strings.HasPrefix(path, customPrefix) || strings.HasPrefix(path, externalPrefix)
}
