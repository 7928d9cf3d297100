"""Plans (contract section 5, "Plans and email redaction", and section 6, "Opt-out")."""

from __future__ import annotations

import pytest

from telemetry_pipeline.rules.plans import (
    EMAIL_INCLUDED,
    SendDecision,
    email_decision,
    is_free_plan,
    opt_out_decision,
)


# --- is_free_plan: "free when it is FREEPLAN, 30DAYTRIAL, TRIALEXPIRED or NULL; every other value is paid"


@pytest.mark.parametrize("plan", ["FREEPLAN", "30DAYTRIAL", "TRIALEXPIRED", None])
def test_free_plans(plan):
    assert is_free_plan(plan) is True


@pytest.mark.parametrize(
    "plan",
    ["BUSINESS", "ENTERPRISE", "", "freeplan", "FreePlan", " FREEPLAN", "FREEPLAN ", "30daytrial", "TRIAL",
     "NULL", "None", "STARTER", "É"],
)
def test_every_other_plan_is_paid(plan):
    assert is_free_plan(plan) is False


# --- email_decision: "included only when the user has at least one company and all of them are free"

COMPANY_OF_TEAM = {"t-free": "c-free", "t-trial": "c-trial", "t-null": "c-null", "t-paid": "c-paid",
                   "t-ghost-company": "c-missing", "t-expired": "c-expired"}
PLAN_OF_COMPANY = {"c-free": "FREEPLAN", "c-trial": "30DAYTRIAL", "c-null": None, "c-paid": "BUSINESS",
                   "c-expired": "TRIALEXPIRED"}


def decide(*team_ids):
    return email_decision(list(team_ids), COMPANY_OF_TEAM, PLAN_OF_COMPANY)


def test_orphan_user_is_withheld():
    assert decide() != EMAIL_INCLUDED


def test_single_free_company_is_included():
    assert decide("t-free") == EMAIL_INCLUDED


def test_null_plan_counts_as_free():
    assert decide("t-null") == EMAIL_INCLUDED


def test_all_free_across_several_companies_is_included():
    assert decide("t-free", "t-trial", "t-null", "t-expired") == EMAIL_INCLUDED


def test_paid_company_is_withheld():
    assert decide("t-paid") != EMAIL_INCLUDED


@pytest.mark.parametrize("teams", [("t-free", "t-paid"), ("t-paid", "t-free"), ("t-trial", "t-null", "t-paid")])
def test_mixed_free_and_paid_is_withheld(teams):
    assert decide(*teams) != EMAIL_INCLUDED


@pytest.mark.parametrize("teams", [("t-missing",), ("t-free", "t-missing"), ("t-missing", "t-free")])
def test_membership_in_a_team_that_does_not_exist_is_withheld(teams):
    assert decide(*teams) != EMAIL_INCLUDED


@pytest.mark.parametrize("teams", [("t-ghost-company",), ("t-free", "t-ghost-company")])
def test_team_whose_company_does_not_exist_is_withheld(teams):
    assert decide(*teams) != EMAIL_INCLUDED


def test_the_withheld_reasons_are_distinct_and_say_withheld():
    reasons = {decide(), decide("t-missing"), decide("t-ghost-company"), decide("t-paid")}
    assert len(reasons) == 4
    assert EMAIL_INCLUDED not in reasons
    assert all("withheld" in reason for reason in reasons)


def test_lowercase_free_plan_name_is_paid_for_email():
    assert email_decision(["t"], {"t": "c"}, {"c": "freeplan"}) != EMAIL_INCLUDED


def test_empty_string_plan_is_paid_for_email():
    assert email_decision(["t"], {"t": "c"}, {"c": ""}) != EMAIL_INCLUDED


# --- opt_out_decision: "nothing is sent ... while apiServer.disablePhoneHome is true and at least one
# company of the installation is on a paid plan. On a free installation the opt-out is not honoured:
# the night is sent, and the run says plainly why."


@pytest.mark.parametrize("plans", [["BUSINESS"], ["FREEPLAN", "ENTERPRISE"], [None, "", "FREEPLAN"],
                                   ["FREEPLAN", "BUSINESS", "ENTERPRISE"]])
def test_opt_out_with_a_paid_company_sends_nothing(plans):
    decision = opt_out_decision(True, plans)
    assert isinstance(decision, SendDecision)
    assert decision.send is False
    assert "disablePhoneHome" in decision.reason


@pytest.mark.parametrize("plans", [["FREEPLAN"], ["FREEPLAN", "30DAYTRIAL", "TRIALEXPIRED", None], [None]])
def test_opt_out_on_an_all_free_installation_is_not_honoured_and_says_why(plans):
    decision = opt_out_decision(True, plans)
    assert decision.send is True
    assert "disablePhoneHome" in decision.reason
    assert "free" in decision.reason
    assert "paid" in decision.reason


def test_opt_out_with_no_companies_at_all_is_sent():
    assert opt_out_decision(True, []).send is True


def test_opt_out_accepts_a_one_shot_iterable_of_plans():
    assert opt_out_decision(True, (p for p in ["FREEPLAN", "BUSINESS"])).send is False


@pytest.mark.parametrize("plans", [[], ["BUSINESS"], ["FREEPLAN"], ["ENTERPRISE", None]])
def test_no_opt_out_is_always_sent(plans):
    decision = opt_out_decision(False, plans)
    assert decision.send is True
    assert "disablePhoneHome is true" not in decision.reason


def test_the_not_honoured_reason_differs_from_the_plain_enabled_reason():
    assert opt_out_decision(True, ["FREEPLAN"]).reason != opt_out_decision(False, ["FREEPLAN"]).reason
