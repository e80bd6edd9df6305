"""The ``acknowledgements`` section of the routing policy: which new conversations get
an automatic acknowledgement and what it says. Its own module because both the policy
file (assignment) and the timeline, which sends them, read it."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from switchboard_common.contract import Channel


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AcknowledgementConditions(_Strict):
    """All given conditions must hold (an empty block matches every new conversation)."""

    channel: list[Channel] | None = None
    #: The queue the conversation's first message goes to (``select_queue``).
    queue: list[str] | None = None
    #: The detected language (ISO 639-1), as classification gives it.
    language: list[str] | None = None


class AcknowledgementRule(_Strict):
    when: AcknowledgementConditions = Field(default_factory=AcknowledgementConditions)
    #: What the customer is told; ``{reference}`` is replaced by the conversation's id.
    #: None: conversations this rule matches get no acknowledgement.
    text: Annotated[str, Field(min_length=1, max_length=4000)] | None

    @model_validator(mode="after")
    def _text_placeholders(self) -> AcknowledgementRule:
        if self.text is not None:
            try:
                self.text.format(reference="c-1")
            except (KeyError, IndexError, ValueError):
                raise ValueError(
                    "text may use {reference} only (write {{ and }} for braces)"
                ) from None
        return self


class Acknowledgements(_Strict):
    """Automatic acknowledgements of new conversations: the first rule that matches a
    conversation decides its text (or that it gets none); no rule, no acknowledgement."""

    #: At most one acknowledgement per customer in each period this long.
    window_seconds: Annotated[float, Field(gt=0, le=30 * 24 * 3600)] = 3600
    rules: list[AcknowledgementRule] = Field(min_length=1)
