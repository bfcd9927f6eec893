package config

import (
	"path/filepath"
	"slices"
	"testing"
)

func TestDebugPprof(t *testing.T) {
	base := `
apps:
  - name: crm
    type: dingtalk
    client_id: k
    client_secret: ` + secretLiteral + "\n"
	cfg, err := Parse([]byte(base), testEnv, testFiles)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if cfg.Debug.Pprof {
		t.Error("debug.pprof is on by default")
	}
	cfg, err = Parse([]byte(base+"debug:\n  pprof: true\n"), testEnv, testFiles)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if !cfg.Debug.Pprof {
		t.Error("debug.pprof: true not applied")
	}
	ps := problems(t, []byte(base+"debug:\n  pprof: true\n  trace: true\n"))
	if got := paths(ps); !slices.Equal(got, []string{"debug.trace"}) {
		t.Errorf("problems at %v, want [debug.trace]", got)
	}
	ps = problems(t, []byte(base+"debug:\n  pprof: sometimes\n"))
	if got := paths(ps); !slices.Equal(got, []string{"debug.pprof"}) {
		t.Errorf("problems at %v, want [debug.pprof]", got)
	}
}

func TestExampleLeavesPprofOff(t *testing.T) {
	getenv := env(map[string]string{"CRM_CLIENT_SECRET": secretEnvValue, "OLDORG_CORP_SECRET": secretCorp})
	cfg, err := Load(filepath.Join("..", "..", "config.example.yaml"), getenv)
	if err != nil {
		t.Fatalf("Load(config.example.yaml): %v", err)
	}
	if cfg.Debug.Pprof {
		t.Error("config.example.yaml turns debug.pprof on")
	}
}
