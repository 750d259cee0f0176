"""Request and response bodies of the HTTP API (pydantic v2), one module per resource.

``common`` holds what they share (limits, text rules, ids, the error body); ``edits``,
``versions``, ``query``, ``facts`` and ``health`` the bodies of those routes. Everything is
re-exported here, so ``from app.api.schemas import Fact`` keeps working.
"""

from app.api.schemas.common import (
    MAX_CANDIDATES,
    MAX_EVAL_RECORDS,
    MAX_FACTS_HARD,
    MAX_GATE_KL,
    MAX_NEW_TOKENS,
    MAX_PROMPTS,
    MAX_TEXT,
    MAX_TOP_K,
    VERSION_ID_PATTERN,
    ApiModel,
    ErrorItem,
    ErrorOut,
    FactText,
    MethodName,
    QueryText,
    VersionId,
    control_character,
)
from app.api.schemas.edits import (
    COVARIANCE_WEIGHT_BOUNDS,
    EditSubmit,
    Fact,
    GateIn,
    JobAccepted,
    JobOut,
    Progress,
)
from app.api.schemas.facts import (
    MAX_FACTS_PAGE,
    FactsPage,
    LedgerFact,
)
from app.api.schemas.health import (
    HealthOut,
    ReadyOut,
    WhoAmIOut,
)
from app.api.schemas.query import (
    CandidateScore,
    GenerateIn,
    GenerateOut,
    NextTokensIn,
    NextTokensOut,
    ScoreIn,
    ScoreOut,
    TokenProb,
)
from app.api.schemas.versions import (
    EvaluateIn,
    RollbackOut,
    VersionDetail,
    VersionList,
    VersionSummary,
)

__all__ = [
    "COVARIANCE_WEIGHT_BOUNDS",
    "ApiModel",
    "CandidateScore",
    "EditSubmit",
    "ErrorItem",
    "ErrorOut",
    "EvaluateIn",
    "Fact",
    "FactText",
    "FactsPage",
    "GateIn",
    "GenerateIn",
    "GenerateOut",
    "HealthOut",
    "JobAccepted",
    "JobOut",
    "LedgerFact",
    "MAX_CANDIDATES",
    "MAX_EVAL_RECORDS",
    "MAX_FACTS_HARD",
    "MAX_FACTS_PAGE",
    "MAX_GATE_KL",
    "MAX_NEW_TOKENS",
    "MAX_PROMPTS",
    "MAX_TEXT",
    "MAX_TOP_K",
    "MethodName",
    "NextTokensIn",
    "NextTokensOut",
    "Progress",
    "QueryText",
    "ReadyOut",
    "RollbackOut",
    "ScoreIn",
    "ScoreOut",
    "TokenProb",
    "VERSION_ID_PATTERN",
    "VersionDetail",
    "VersionId",
    "VersionList",
    "VersionSummary",
    "WhoAmIOut",
    "control_character",
]
