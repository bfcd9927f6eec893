package httpapi_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tokend/tokend/internal/httpapi"
)

func TestPprofOnlyWhenAskedFor(t *testing.T) {
	for _, on := range []bool{false, true} {
		api, err := httpapi.New(httpapi.Options{Broker: &stubBroker{}, Pprof: on})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(api.OpsHandler())
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine", "/debug/pprof/cmdline"} {
			resp, err := http.Get(srv.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			want := http.StatusNotFound
			if on {
				want = http.StatusOK
			}
			if resp.StatusCode != want {
				t.Errorf("pprof %v: GET %s = %d, want %d", on, path, resp.StatusCode, want)
			}
		}
		srv.Close()
	}
}
