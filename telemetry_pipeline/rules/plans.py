"""Plans decide two things: whose email may leave, and whether the customer may switch the report off."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

FREE_PLANS = frozenset({"FREEPLAN", "30DAYTRIAL", "TRIALEXPIRED"})


def is_free_plan(plan: str | None) -> bool:
    """Free: FREEPLAN, 30DAYTRIAL, TRIALEXPIRED or no plan at all. Any other value is paid."""
    return plan is None or plan in FREE_PLANS


# Why an email was kept in or left out; the summary counts users per reason.
EMAIL_INCLUDED = "included: every company of the user is on a free plan"
WITHHELD_NO_COMPANY = "withheld: the user is a member of no team"
WITHHELD_UNKNOWN_TEAM = "withheld: a team of the user does not exist"
WITHHELD_UNKNOWN_COMPANY = "withheld: a company of the user does not exist"
WITHHELD_PAID = "withheld: a company of the user is on a paid plan"


def email_decision(
    team_ids: Sequence[str],
    company_of_team: Mapping[str, str],
    plan_of_company: Mapping[str, str | None],
) -> str:
    """The reason the user's email is included or withheld; included only if every company is free.

    A user's companies are the companies of the teams the user is a member of. Anything
    unknown on the way (no team, a missing team, a missing company) withholds the email.
    """
    if not team_ids:
        return WITHHELD_NO_COMPANY
    for team_id in team_ids:
        if team_id not in company_of_team:
            return WITHHELD_UNKNOWN_TEAM
        company_id = company_of_team[team_id]
        if company_id not in plan_of_company:
            return WITHHELD_UNKNOWN_COMPANY
        if not is_free_plan(plan_of_company[company_id]):
            return WITHHELD_PAID
    return EMAIL_INCLUDED


@dataclass(frozen=True)
class SendDecision:
    send: bool
    reason: str


def opt_out_decision(disable_phone_home: bool, plans: Iterable[str | None]) -> SendDecision:
    """The customer's opt-out holds only while some company of the installation pays."""
    paid = sum(1 for plan in plans if not is_free_plan(plan))
    if not disable_phone_home:
        return SendDecision(True, "phone home enabled")
    if paid:
        return SendDecision(
            False,
            f"opted out: apiServer.disablePhoneHome is true and {paid} compan{'y is' if paid == 1 else 'ies are'}"
            " on a paid plan; nothing is sent",
        )
    return SendDecision(
        True,
        "sent although apiServer.disablePhoneHome is true: the opt-out is honoured only when a"
        " company is on a paid plan, and every company here is on a free plan",
    )
