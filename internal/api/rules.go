package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/rules"
)

// Rules gives the rule groups and the alerting rules the server evaluates: internal/alerting's
// Manager.
type Rules interface {
	RuleGroups() []*rules.Group
	AlertingRules() []*rules.AlertingRule
}

// The answers of /api/v1/rules and /api/v1/alerts are Prometheus' own
// (web/api/v1/api.go of github.com/prometheus/prometheus), field for field, so that Grafana
// and other Prometheus clients show Millwright's rules and alerts.

type ruleDiscovery struct {
	RuleGroups []*ruleGroup `json:"groups"`
}

type ruleGroup struct {
	Name string `json:"name"`
	File string `json:"file"`
	// Alerting and recording rules share the array, in the group's order.
	Rules          []any     `json:"rules"`
	Interval       float64   `json:"interval"`
	Limit          int       `json:"limit"`
	EvaluationTime float64   `json:"evaluationTime"`
	LastEvaluation time.Time `json:"lastEvaluation"`
}

type alertingRule struct {
	State          string           `json:"state"`
	Name           string           `json:"name"`
	Query          string           `json:"query"`
	Duration       float64          `json:"duration"`
	KeepFiringFor  float64          `json:"keepFiringFor"`
	Labels         labels.Labels    `json:"labels"`
	Annotations    labels.Labels    `json:"annotations"`
	Alerts         []*alert         `json:"alerts"`
	Health         rules.RuleHealth `json:"health"`
	LastError      string           `json:"lastError,omitempty"`
	EvaluationTime float64          `json:"evaluationTime"`
	LastEvaluation time.Time        `json:"lastEvaluation"`
	Type           string           `json:"type"`
}

type recordingRule struct {
	Name           string           `json:"name"`
	Query          string           `json:"query"`
	Labels         labels.Labels    `json:"labels"`
	Health         rules.RuleHealth `json:"health"`
	LastError      string           `json:"lastError,omitempty"`
	EvaluationTime float64          `json:"evaluationTime"`
	LastEvaluation time.Time        `json:"lastEvaluation"`
	Type           string           `json:"type"`
}

type alertDiscovery struct {
	Alerts []*alert `json:"alerts"`
}

type alert struct {
	Labels          labels.Labels `json:"labels"`
	Annotations     labels.Labels `json:"annotations"`
	State           string        `json:"state"`
	ActiveAt        *time.Time    `json:"activeAt,omitempty"`
	KeepFiringSince *time.Time    `json:"keepFiringSince,omitempty"`
	Value           string        `json:"value"`
}

type rulesAPI struct {
	rules  Rules
	parser parser.Parser
}

func toAlerts(as []*rules.Alert) []*alert {
	out := make([]*alert, len(as))
	for i, a := range as {
		out[i] = &alert{
			Labels:      a.Labels,
			Annotations: a.Annotations,
			State:       a.State.String(),
			ActiveAt:    &a.ActiveAt,
			Value:       strconv.FormatFloat(a.Value, 'e', -1, 64),
		}
		if !a.KeepFiringSince.IsZero() {
			out[i].KeepFiringSince = &a.KeepFiringSince
		}
	}
	return out
}

// alerts answers GET /api/v1/alerts: every active (pending or firing) alert.
func (a *rulesAPI) alerts(*http.Request) (any, *apiError) {
	res := &alertDiscovery{Alerts: []*alert{}}
	if a.rules != nil {
		for _, r := range a.rules.AlertingRules() {
			res.Alerts = append(res.Alerts, toAlerts(r.ActiveAlerts())...)
		}
	}
	return res, nil
}

// list answers GET /api/v1/rules with Prometheus' filters: type, rule_name[], rule_group[],
// file[], exclude_alerts, match[] (on the labels a rule's definition gives).
func (a *rulesAPI) list(r *http.Request) (any, *apiError) {
	if err := r.ParseForm(); err != nil {
		return nil, badData(fmt.Errorf("error parsing form values: %w", err))
	}
	set := func(vs []string) map[string]bool {
		m := make(map[string]bool, len(vs))
		for _, v := range vs {
			m[v] = true
		}
		return m
	}
	names, groups, files := set(r.Form["rule_name[]"]), set(r.Form["rule_group[]"]), set(r.Form["file[]"])
	typ := strings.ToLower(r.URL.Query().Get("type"))
	if typ != "" && typ != "alert" && typ != "record" {
		return nil, badData(fmt.Errorf("invalid parameter \"type\": not supported value %q", typ))
	}
	excludeAlerts := false
	if s := r.URL.Query().Get("exclude_alerts"); s != "" {
		var err error
		if excludeAlerts, err = strconv.ParseBool(strings.ToLower(s)); err != nil {
			return nil, badData(fmt.Errorf("invalid parameter \"exclude_alerts\": error converting exclude_alerts: %w", err))
		}
	}
	var matcherSets [][]*labels.Matcher
	if ms := r.Form["match[]"]; len(ms) > 0 {
		var err error
		if matcherSets, err = a.parser.ParseMetricSelectors(ms); err != nil {
			return nil, badData(err)
		}
	outer:
		for _, set := range matcherSets {
			for _, m := range set {
				if !m.Matches("") {
					continue outer
				}
			}
			return nil, badData(errors.New("match[] must contain at least one non-empty matcher"))
		}
	}
	res := &ruleDiscovery{RuleGroups: []*ruleGroup{}}
	if a.rules == nil {
		return res, nil
	}
	for _, g := range a.rules.RuleGroups() {
		if len(groups) > 0 && !groups[g.Name()] || len(files) > 0 && !files[g.File()] {
			continue
		}
		rg := &ruleGroup{
			Name:           g.Name(),
			File:           g.File(),
			Interval:       g.Interval().Seconds(),
			Limit:          g.Limit(),
			Rules:          []any{},
			EvaluationTime: g.GetEvaluationTime().Seconds(),
			LastEvaluation: g.GetLastEvaluation(),
		}
		for _, rr := range g.Rules(matcherSets...) {
			if len(names) > 0 && !names[rr.Name()] {
				continue
			}
			lastError := ""
			if err := rr.LastError(); err != nil {
				lastError = err.Error()
			}
			switch rule := rr.(type) {
			case *rules.AlertingRule:
				if typ == "record" {
					continue
				}
				var active []*alert
				if !excludeAlerts {
					active = toAlerts(rule.ActiveAlerts())
				}
				rg.Rules = append(rg.Rules, alertingRule{
					State:          rule.State().String(),
					Name:           rule.Name(),
					Query:          rule.Query().String(),
					Duration:       rule.HoldDuration().Seconds(),
					KeepFiringFor:  rule.KeepFiringFor().Seconds(),
					Labels:         rule.Labels(),
					Annotations:    rule.Annotations(),
					Alerts:         active,
					Health:         rule.Health(),
					LastError:      lastError,
					EvaluationTime: rule.GetEvaluationDuration().Seconds(),
					LastEvaluation: rule.GetEvaluationTimestamp(),
					Type:           "alerting",
				})
			case *rules.RecordingRule:
				if typ == "alert" {
					continue
				}
				rg.Rules = append(rg.Rules, recordingRule{
					Name:           rule.Name(),
					Query:          rule.Query().String(),
					Labels:         rule.Labels(),
					Health:         rule.Health(),
					LastError:      lastError,
					EvaluationTime: rule.GetEvaluationDuration().Seconds(),
					LastEvaluation: rule.GetEvaluationTimestamp(),
					Type:           "recording",
				})
			default:
				return nil, &apiError{errInternal, errors.New("failed to assert type of rule " + rr.Name()), http.StatusInternalServerError}
			}
		}
		// A group whose rules were all filtered out is left out.
		if len(rg.Rules) > 0 {
			res.RuleGroups = append(res.RuleGroups, rg)
		}
	}
	return res, nil
}
