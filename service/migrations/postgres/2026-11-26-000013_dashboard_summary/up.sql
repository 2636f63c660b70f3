-- The PCN dashboard's summary (ARCHITECTURE.md, "Dashboard metrics"): a few
-- values of each resource the figures count, taken from its index rows and
-- JSON (`dashboard/summary.rs`) and replaced by the write path in the
-- transaction that writes the resource, as its index rows are. The figures
-- group and count over these narrow rows instead of probing the index
-- tables some thirty times a referral.
--
-- Created empty: a server that finds SP referrals but no summary rebuilds
-- it before it serves (as `sp-hub reindex` does).

-- One row per SP referral (ServiceRequest with the SP code and an
-- authoredOn, not draft or entered in error).
CREATE TABLE dash_referrals (
    sr TEXT PRIMARY KEY,
    -- `Organization/ID` or `PractitionerRole/ID`; NULL without one.
    requester TEXT,
    -- The subject's id.
    patient TEXT,
    -- authoredOn as a stored instant (the index's low end).
    authored TEXT NOT NULL,
    status TEXT
);
-- A practice's referrals, by date.
CREATE INDEX dash_referrals_requester ON dash_referrals (requester, authored);

-- What a referral has: one row per (resource, referral it is about) and
-- kind. What the value columns hold depends on the kind:
--   need           code: an sp-need code of the referral itself
--   task           status, actor: owner (Type/ID), at: executionPeriod.start,
--                  code: the first statusReason code, flag: 1 when it is
--                  an onward referral (has partOf)
--   contact        at, code: the sp-contact-mode code, actor: the link
--                  worker's PractitionerRole id
--   holding        at, actor: performer (Type/ID), num: hours
--   outcome        at, code: measure, code2: timing, num: valueInteger
--   message-back   (none)
--   communication  actor: a sender (Type/ID), one row each
--   gp             a GP consultation, one row per referral it is based on
--                  (sr '' when none): at, patient, actor: serviceProvider id
CREATE TABLE dash_facts (
    res_type TEXT NOT NULL,
    res_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    sr TEXT NOT NULL,
    at TEXT,
    status TEXT,
    code TEXT,
    code2 TEXT,
    actor TEXT,
    patient TEXT,
    flag INTEGER NOT NULL,
    num DOUBLE PRECISION
);
CREATE INDEX dash_facts_sr ON dash_facts (sr, kind);
CREATE INDEX dash_facts_owner ON dash_facts (res_type, res_id);
CREATE INDEX dash_facts_patient ON dash_facts (kind, patient);
