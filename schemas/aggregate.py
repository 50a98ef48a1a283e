"""The monthly aggregate per (month, currency), as the replay prints it and the stream keeps it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from schemas.money import Cents, Ratio


class MonthlyAggregate(BaseModel):
    model_config = ConfigDict(frozen=True)

    month: str = Field(pattern=r"^\d{4}-\d{2}$")
    currency: str
    opening_mrr: Cents
    new_mrr: Cents
    expansion_mrr: Cents
    contraction_mrr: Cents
    churn_mrr: Cents
    reactivation_mrr: Cents
    net_new_mrr: Cents
    closing_mrr: Cents
    customers_opening: int
    customers_closing: int
    new_customers: int
    reactivated_customers: int
    churned_customers: int
    arpa: Cents | None = Field(description="closing_mrr / customers_closing, half-even to the cent.")
    nrr: Ratio = Field(description="(opening + expansion + reactivation - contraction - churn) / opening.")
    grr: Ratio = Field(description="(opening - contraction - churn) / opening.")
    quick_ratio: Ratio = Field(description="(new + expansion + reactivation) / (contraction + churn).")


class PeriodAggregate(BaseModel):
    """Several consecutive months rolled up: a quarter or a year to date, per currency."""

    model_config = ConfigDict(frozen=True)

    currency: str
    first_month: str = Field(pattern=r"^\d{4}-\d{2}$")
    last_month: str = Field(pattern=r"^\d{4}-\d{2}$")
    opening_mrr: Cents = Field(description="opening_mrr of the first month")
    new_mrr: Cents
    expansion_mrr: Cents
    contraction_mrr: Cents
    churn_mrr: Cents
    reactivation_mrr: Cents
    net_new_mrr: Cents
    closing_mrr: Cents = Field(description="closing_mrr of the last month")
    customers_opening: int
    customers_closing: int
    new_customers: int
    reactivated_customers: int
    churned_customers: int
    nrr: Ratio
    grr: Ratio
    quick_ratio: Ratio


class ReplayResult(BaseModel):
    """The document printed by `mrr-stream replay --format json` and `mrr-stream status --format json`."""

    rejected: int
    months: list[MonthlyAggregate]
