"""The wording of the invitations. Only facts of the SubscriptionCreated event are used: the reseller
is named by its Lens Business ID (the outbox looks nothing up), and no price is ever mentioned (the
recipient does not pay: the reseller does)."""

from __future__ import annotations

import re
from dataclasses import dataclass

WIDTH = 72
_LINE = re.compile(rf"(\S{{{WIDTH + 1},}}|.{{1,{WIDTH}}})(?: |$)")


@dataclass(frozen=True)
class Letter:
    subject: str
    body: str


def activation_letter(*, reseller_org_id: str, plan_name: str, end_user_email: str, display_name: str | None,
                      subscription_id: str) -> Letter:
    """To the end user of a single-user subscription: activate it under your Lens ID."""
    greeting = f"Hello {one_line(display_name)}," if display_name and display_name.strip() else "Hello,"
    return Letter(
        subject=f"Activate your {one_line(plan_name)} subscription",
        body=_body(
            greeting,
            prose(f"Your Lens reseller (Lens Business ID {reseller_org_id}) has bought a {plan_name} subscription "
                  "for you."),
            "To start using it, activate it under your Lens ID:",
            "\n".join([
                f"  1. Sign in to Lens with the Lens ID of this email address, {end_user_email}.",
                "     If you have no Lens ID yet, create one with this address.",
                f"  2. Activate the subscription with its reference: {subscription_id}",
            ]),
            "\n".join([
                f"  Plan:         {plan_name} (one seat)",
                f"  Subscription: {subscription_id}",
            ]),
            prose("The subscription is billed to your reseller: there is nothing for you to pay. For questions "
                  "about it, please contact your reseller."),
            "If you did not expect this invitation, you can ignore it.",
            "Lens",
        ),
    )


def administration_letter(*, reseller_org_id: str, plan_name: str, organization_name: str, admin_email: str,
                          seats: int, customer_account_id: str, subscription_id: str) -> Letter:
    """To the administrator named on an organization subscription: manage the new customer account."""
    seat_count = "1 seat" if seats == 1 else f"{seats} seats"
    return Letter(
        subject=f"Manage the Lens Business ID of {one_line(organization_name)} ({one_line(plan_name)})",
        body=_body(
            "Hello,",
            prose(f"Your Lens reseller (Lens Business ID {reseller_org_id}) has bought a {plan_name} subscription "
                  f"with {seat_count} for {organization_name}, and named you, {admin_email}, as its administrator."),
            prose(f"A customer Lens Business ID has been created for {organization_name}:"),
            "\n".join([
                f"  Customer Lens Business ID: {customer_account_id}",
                f"  Plan:                      {plan_name}, {seat_count}",
                f"  Subscription:              {subscription_id}",
            ]),
            prose("To manage it, sign in to Lens with the Lens ID of this email address and open the customer "
                  f"Lens Business ID {customer_account_id}. There you can assign the {seat_count} to the people "
                  f"of {organization_name}."),
            prose("The subscription is billed to your reseller. For questions about it, please contact your "
                  "reseller."),
            "If you did not expect this invitation, you can ignore it.",
            "Lens",
        ),
    )


def prose(text: str) -> str:
    """A paragraph wrapped for plain-text mail; addresses and ids are never split. (What ``textwrap.fill``
    without breaking words or hyphens makes of one line, greedily: each line is the longest run of words that
    fits, or one word longer than the width; at about a seventh of its cost in a rebuild.)"""
    return "\n".join(_LINE.findall(one_line(text)))


def one_line(text: str) -> str:
    """Text fit for a header or a greeting: a name with a line break must not start a new header."""
    return " ".join(text.split())


def _body(*paragraphs: str) -> str:
    return "\n\n".join(paragraphs) + "\n"
