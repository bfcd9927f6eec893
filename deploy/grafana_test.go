package deploy

import (
	"encoding/json"
	"fmt"
	"testing"
)

// ---- Grafana ----

func TestDashboard(t *testing.T) {
	var dash map[string]any
	if err := json.Unmarshal(readFile(t, "deploy/grafana/tokend-dashboard.json"), &dash); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	if v, _ := dash["schemaVersion"].(float64); v < 36 {
		t.Errorf("schemaVersion = %v, want >= 36", dash["schemaVersion"])
	}
	if uid, _ := dash["uid"].(string); uid == "" {
		t.Errorf("dashboard has no uid")
	}

	var exprs []string
	var badDS []string
	var walk func(key string, v any)
	walk = func(key string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if key == "datasource" {
				if typ, uid := v["type"], v["uid"]; typ != "grafana" && (typ != "prometheus" || uid != "${DS_PROMETHEUS}") {
					badDS = append(badDS, fmt.Sprintf("%v/%v", typ, uid))
				}
			}
			for k, c := range v {
				walk(k, c)
			}
		case []any:
			for _, c := range v {
				walk(key, c)
			}
		case string:
			if key == "expr" || key == "definition" {
				exprs = append(exprs, v)
			}
		}
	}
	walk("", dash)
	if len(badDS) > 0 {
		t.Errorf("datasources other than ${DS_PROMETHEUS}: %v", badDS)
	}

	contract := contractMetrics()
	used := map[string]bool{}
	for _, e := range exprs {
		for _, m := range metricRE.FindAllString(e, -1) {
			base := baseMetric(m)
			if !hasKey(contract, base) {
				t.Errorf("dashboard uses %s, which is not a contract metric", m)
			}
			used[base] = true
		}
	}
	for m := range contract {
		if !used[m] {
			t.Errorf("dashboard does not show %s", m)
		}
	}

	templating, _ := dash["templating"].(map[string]any)
	list, _ := templating["list"].([]any)
	hasDS := false
	for _, v := range list {
		if v, _ := v.(map[string]any); v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource" {
			hasDS = true
		}
	}
	if !hasDS {
		t.Errorf("no datasource variable DS_PROMETHEUS")
	}

	ids := map[float64]bool{}
	panels, _ := dash["panels"].([]any)
	if len(panels) == 0 {
		t.Fatalf("no panels")
	}
	for _, p := range panels {
		p, _ := p.(map[string]any)
		id, _ := p["id"].(float64)
		if ids[id] {
			t.Errorf("panel id %v used twice", id)
		}
		ids[id] = true
	}
}
