"""/v1/classify: stateless classification of one or many texts (nothing stored)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from ..deps import IntakeDep, StateDep
from ..schemas import ClassifyRequest, ClassifyResponse, Message, PredictionPublic
from ._limits import AUTH, BODY, GuardedRoute, check_text_size

router = APIRouter(prefix="/v1", tags=["classify"], route_class=GuardedRoute)


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    responses={
        **BODY,
        **AUTH,
        503: {"model": Message, "description": "the model failed, or the database (API keys) is unavailable"},
    },
)
async def classify(payload: ClassifyRequest, state: StateDep, _: IntakeDep) -> ClassifyResponse:
    limit = state.settings.classify_max_texts
    if len(payload.texts) > limit:  # the OpenAPI document's maxItems (openapi.py): a validation error
        raise HTTPException(
            422,
            [
                {
                    "loc": ["body", "texts"],
                    "msg": f"{len(payload.texts)} texts sent; at most {limit} per request (TRIAGE_CLASSIFY_MAX_TEXTS)",
                    "type": "too_long",
                }
            ],
        )
    for i, text in enumerate(payload.texts):
        check_text_size(text, state.settings.max_text_bytes, f"texts[{i}]")
    try:
        preds = await state.batcher.submit(list(payload.texts))
    except Exception as exc:
        state.metrics.failures.inc()
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"the model failed ({type(exc).__name__}); try again"
        ) from None
    out = []
    for pred in preds:
        decision = state.rules.route(pred.category, float(pred.confidence))
        state.metrics.predictions.labels(pred.category).inc()
        out.append(
            PredictionPublic(
                category=pred.category,
                confidence=float(pred.confidence),
                probabilities={str(k): float(v) for k, v in pred.probabilities.items()},
                queue=decision.queue,
                needs_review=decision.needs_review,
            )
        )
    version = getattr(preds[0], "model_version", state.model_version) if preds else state.model_version
    return ClassifyResponse(model_version=version, predictions=out)
