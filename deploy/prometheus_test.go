package deploy

import (
	"slices"
	"strings"
	"testing"
)

// ---- Prometheus rules ----

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// wantAlerts are the alerts the README's Alerts section documents.
func wantAlerts() []string {
	return []string{
		"TokendNoValidToken", "TokendRefreshFailing", "TokendTokenExpiringSoon",
		"TokendUpstreamCredentialsRejected", "TokendUpstreamIPNotAllowed", "TokendIPBanned",
		"TokendStoreDown", "TokendHighInvalidationRate", "TokendDown", "TokendAllReplicasDown",
		"TokendHighErrorRate",
	}
}

func TestAlertRules(t *testing.T) {
	var rf ruleFile
	decodeYAML(t, "deploy/prometheus/alerts.yaml", &rf)
	if len(rf.Groups) != 1 || rf.Groups[0].Name != "tokend" {
		t.Fatalf("want one rule group named tokend")
	}
	contract, planned := contractMetrics(), plannedMetrics()
	var names []string
	for _, r := range rf.Groups[0].Rules {
		if r.Alert == "" {
			t.Errorf("rule %q is not an alert", r.Record)
			continue
		}
		names = append(names, r.Alert)
		t.Run(r.Alert, func(t *testing.T) {
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("severity = %q, want critical or warning", s)
			}
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("annotation %s missing", a)
				}
			}
			if r.Annotations["runbook"] != "README.md#alerts" {
				t.Errorf("runbook = %q, want README.md#alerts", r.Annotations["runbook"])
			}
			usesContract := false
			for _, m := range metricRE.FindAllString(r.Expr, -1) {
				switch base := baseMetric(m); {
				case hasKey(contract, base):
					usesContract = true
				case planned[base]:
				default:
					t.Errorf("expr uses %s, which is not a contract metric", m)
				}
			}
			if !usesContract && !strings.Contains(r.Expr, "up{") {
				t.Errorf("expr does not rest on a contract metric (a planned metric alone is not enough)")
			}
		})
	}
	for _, want := range wantAlerts() {
		if !slices.Contains(names, want) {
			t.Errorf("alert %s missing", want)
		}
	}
}

func hasKey[K comparable, V any](m map[K]V, k K) bool {
	_, ok := m[k]
	return ok
}

// TestAlertUnitTests checks that alerts_test.yaml (run by promtool in scripts/check-deploy.sh) tests the
// key alerts both firing and not firing.
func TestAlertUnitTests(t *testing.T) {
	var tf struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				AlertName string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	decodeYAML(t, "deploy/prometheus/alerts_test.yaml", &tf)
	if !slices.Equal(tf.RuleFiles, []string{"alerts.yaml"}) {
		t.Errorf("rule_files = %v, want [alerts.yaml]", tf.RuleFiles)
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, g := range tf.Tests {
		for _, a := range g.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.AlertName] = true
			} else {
				silent[a.AlertName] = true
			}
		}
	}
	for _, name := range wantAlerts() {
		t.Run(name, func(t *testing.T) {
			if !fires[name] || !silent[name] {
				t.Errorf("want a test where it fires (%v) and one where it does not (%v)", fires[name], silent[name])
			}
		})
	}
}
