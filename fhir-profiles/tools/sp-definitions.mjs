#!/usr/bin/env node
// Writes sp-hub's own conformance resources, one FHIR R4 (4.0.1) JSON file
// each, into fhir-profiles/{CodeSystem,ValueSet,ConceptMap,StructureDefinition}/.
//
//   node fhir-profiles/tools/sp-definitions.mjs
//
// This script is the source of these four folders: edit it, not the JSON, and
// run it again. The output is deterministic (fixed order, 2-space indent,
// trailing newline). Files in the four folders that it no longer produces are
// deleted, so the folders always hold exactly what is defined here.
//
// SNOMED CT concept ids are only those checked against published sources (see
// each ConceptMap element's comment); a need without a checked concept is
// `unmatched`. Outcome measures carry codes and short neutral displays only,
// never questionnaire wording.

import { mkdirSync, readdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const BASE = 'https://sp-hub.example/fhir';
const VERSION = '0.1.0';
const PUBLISHER = 'sp-hub';
const SNOMED = 'http://snomed.info/sct';
const HL7_SD = 'http://hl7.org/fhir/StructureDefinition';
const NHS_NUMBER = 'https://fhir.nhs.uk/Id/nhs-number';
const ODS_CODE = 'https://fhir.nhs.uk/Id/ods-organization-code';
const OBS_CATEGORY = 'http://terminology.hl7.org/CodeSystem/observation-category';
const TASK_CODE = 'http://hl7.org/fhir/CodeSystem/task-code';

const cs = (id) => `${BASE}/CodeSystem/${id}`;
const vs = (id) => `${BASE}/ValueSet/${id}`;
const sdUrl = (id) => `${BASE}/StructureDefinition/${id}`;
const pascal = (id) =>
  id
    .split('-')
    .map((p) => p.charAt(0).toUpperCase() + p.slice(1))
    .join('');

// ---------------------------------------------------------------------------
// Code systems: [code, display, definition, properties?]
// ---------------------------------------------------------------------------

const CODE_SYSTEMS = [
  {
    id: 'sp-need',
    title: 'Social prescribing needs',
    description:
      'The needs (reasons for referral) a social prescribing referral can name: ' +
      'what matters to the person and what the link worker helps with. ' +
      'ServiceRequest.reasonCode of an SP referral uses these codes; ' +
      'ConceptMap sp-need-to-snomed relates them to SNOMED CT.',
    concepts: [
      ['loneliness', 'Loneliness', 'The person feels lonely: the contact they have with others does not meet the need they feel.'],
      ['social-isolation', 'Social isolation', 'The person has few social contacts or little contact with other people.'],
      ['debt-money', 'Debt and money', 'Problem debt, budgeting or managing money.'],
      ['housing', 'Housing', 'Housing problems: unsuitable or insecure housing, tenancy problems, homelessness or the risk of it.'],
      ['employment', 'Employment', 'Finding, keeping or returning to work, including volunteering as a route to work.'],
      ['bereavement', 'Bereavement', 'Support after the death of someone close to the person.'],
      ['mental-wellbeing', 'Mental wellbeing', 'Low mood, stress or worry that does not need a clinical service; building mental wellbeing.'],
      ['physical-activity', 'Physical activity', 'Becoming more physically active.'],
      ['carer-support', 'Carer support', 'Support for a person who looks after someone else without being paid for it.'],
      ['benefits-welfare', 'Benefits and welfare', 'Claiming benefits and welfare entitlements, including reviews and appeals.'],
      ['food-poverty', 'Food poverty', 'Not having enough food or money for food; food banks and food support.'],
      ['domestic-abuse-support', 'Domestic abuse support', 'Community support for a person affected by domestic abuse (safeguarding follows its own procedures).'],
      ['substance-use-support', 'Substance use support', 'Community support about alcohol or drug use.'],
      ['education-skills', 'Education and skills', 'Learning, courses, reading, writing, numbers and other skills.'],
      ['transport-access', 'Transport and access', 'Getting to services and activities: transport, mobility and physical access.'],
      ['digital-inclusion', 'Digital inclusion', 'Access to, and confidence with, phones, computers and the internet.'],
      ['legal-advice', 'Legal advice', 'Non-clinical legal matters such as immigration, family or consumer advice.'],
      ['other', 'Other', 'A need no other code covers; describe it in CodeableConcept.text.'],
    ],
  },
  {
    id: 'sp-business-status',
    title: 'Social prescribing Task business statuses',
    description:
      'Where a social prescribing referral stands inside the Task status ' +
      '(Task.businessStatus): finer steps of the link worker\'s work that the ' +
      'FHIR Task status does not distinguish, for caseload and waiting-time figures.',
    concepts: [
      ['awaiting-contact', 'Awaiting contact', 'The referral waits for the first attempt to contact the person.'],
      ['contact-attempted', 'Contact attempted', 'At least one attempt to contact the person has been made without reaching them.'],
      ['first-contact-made', 'First contact made', 'The link worker has spoken with the person for the first time.'],
      ['assessment-done', 'Assessment done', 'The conversation about what matters to the person has taken place.'],
      ['support-plan-agreed', 'Support plan agreed', 'The person and the link worker have agreed a plan.'],
      ['in-holding', 'In holding', 'The person waits for a service to become available; the link worker gives holding support meanwhile.'],
      ['onward-referred', 'Onward referred', 'The person has been referred on to a specific service (a sub-task, Task.partOf, records it).'],
      ['attending-service', 'Attending service', 'The person is taking part in the service or activity they were connected with.'],
      ['follow-up-due', 'Follow-up due', 'A follow-up contact is planned.'],
      ['closed', 'Closed', 'Work on the referral has ended; the Task status says how.'],
    ],
  },
  {
    id: 'sp-status-reason',
    title: 'Social prescribing Task status reasons',
    description:
      'Why a social prescribing Task was rejected, cancelled, put on hold or ' +
      'failed (Task.statusReason). The codes let a dashboard tell apart a gap ' +
      'in services, the person\'s own choice or readiness, not reaching the ' +
      'person, lack of capacity and administrative reasons; the property ' +
      'reason-group gives that grouping.',
    properties: [
      {
        code: 'reason-group',
        uri: `${cs('sp-status-reason')}#reason-group`,
        description:
          'Dashboard group of the reason: service-gap | person | contact | capacity | administrative.',
        type: 'code',
      },
    ],
    concepts: [
      ['no-suitable-service', 'No suitable service available', 'No service suitable for the person\'s need is available (a gap in local provision).', { 'reason-group': 'service-gap' }],
      ['not-ready', 'Person not ready', 'The person is not ready to take up support now.', { 'reason-group': 'person' }],
      ['could-not-contact', 'Could not contact', 'The person could not be reached after the agreed number of attempts.', { 'reason-group': 'contact' }],
      ['declined-by-person', 'Declined by the person', 'The person declined social prescribing (GP systems record SNOMED CT 871711000000103 Social prescribing declined).', { 'reason-group': 'person' }],
      ['out-of-area', 'Out of area', 'The person lives, or is registered, outside the area the service covers.', { 'reason-group': 'administrative' }],
      ['capacity-full', 'Capacity full', 'The service or the link workers have no capacity to take the referral now.', { 'reason-group': 'capacity' }],
      ['duplicate', 'Duplicate referral', 'The referral repeats another one for the same person and need.', { 'reason-group': 'administrative' }],
      ['needs-clinical-service', 'Needs a clinical service', 'The person\'s needs call for a clinical service rather than social prescribing.', { 'reason-group': 'administrative' }],
      ['moved-away', 'Moved away', 'The person has moved away from the area.', { 'reason-group': 'person' }],
      ['died', 'Died', 'The person has died.', { 'reason-group': 'person' }],
      ['other', 'Other', 'Another reason; give it in CodeableConcept.text.', { 'reason-group': 'administrative' }],
    ],
  },
  {
    id: 'sp-holding-work',
    title: 'Holding work categories',
    description:
      'Kinds of support a link worker gives that are not a hand-off to a ' +
      'service, often while the person waits for one ("holding" work). ' +
      'Procedure.category of the sp-holding-work profile uses these codes.',
    concepts: [
      ['check-in-call', 'Check-in call', 'A call to see how the person is getting on.'],
      ['emotional-support', 'Emotional support', 'Time spent listening to and supporting the person.'],
      ['practical-help', 'Practical help', 'Help with a practical task, such as a form, a letter or an appointment.'],
      ['advocacy', 'Advocacy', 'Speaking or writing on the person\'s behalf to another organisation.'],
      ['signposting', 'Signposting while waiting', 'Information about other sources of help while the person waits.'],
      ['welfare-check', 'Welfare check', 'Checking that the person is safe and well.'],
    ],
  },
  {
    id: 'sp-employment-model',
    title: 'Link worker employment models',
    description:
      'How a link worker is employed: by the Primary Care Network itself or ' +
      'by a voluntary and community sector (VCS) organisation the PCN ' +
      'subcontracts. Used by the sp-employment-model extension on PractitionerRole.',
    concepts: [
      ['pcn-employed', 'PCN-employed', 'Employed by the Primary Care Network (or its lead practice).'],
      ['vcs-subcontracted', 'VCS-subcontracted', 'Employed by a voluntary and community sector organisation that the Primary Care Network subcontracts.'],
    ],
  },
  {
    id: 'sp-contact-mode',
    title: 'Contact modes',
    description:
      'How a link worker\'s contact with a person took place. Encounter.type ' +
      'of the sp-contact profile uses these codes.',
    concepts: [
      ['phone', 'Phone', 'A telephone call.'],
      ['video', 'Video', 'A video call.'],
      ['face-to-face', 'Face to face', 'A meeting in person away from the person\'s home.'],
      ['home-visit', 'Home visit', 'A meeting in person at the person\'s home.'],
      ['text-email', 'Text or email', 'An exchange of text messages or emails.'],
    ],
  },
  {
    id: 'sp-organisation-kind',
    title: 'Organisation kinds',
    description:
      'The kinds of organisation taking part in social prescribing. ' +
      'Organization.type of the sp-organisation profile carries one of them.',
    concepts: [
      ['gp-practice', 'GP practice', 'A general practice; it refers patients and is part of a Primary Care Network.'],
      ['pcn', 'Primary Care Network', 'A group of GP practices that employs or subcontracts link workers.'],
      ['vcs', 'VCS organisation', 'A voluntary and community sector organisation: a charity or community group.'],
      ['icb', 'Integrated Care Board', 'The NHS body that plans and funds services for an area.'],
    ],
  },
  {
    id: 'sp-role',
    title: 'Social prescribing roles',
    description:
      'Roles in social prescribing (PractitionerRole.code of the ' +
      'sp-link-worker-role profile).',
    concepts: [
      ['link-worker', 'Link worker', 'A social prescribing link worker.'],
      ['link-worker-lead', 'Link worker lead', 'A link worker who also leads or supervises other link workers.'],
    ],
  },
  {
    id: 'sp-outcome-measure',
    title: 'Outcome measures',
    description:
      'Outcome scores recorded before and after social prescribing: the four ' +
      'ONS personal wellbeing items (ONS4, each 0 to 10) and the Short ' +
      'Warwick-Edinburgh Mental Wellbeing Scale (SWEMWBS) total, raw (7 to 35) ' +
      'and converted to the metric score. Codes and short neutral names only: ' +
      'no questionnaire wording.',
    concepts: [
      ['ons4-life-satisfaction', 'ONS4 life satisfaction', 'ONS4 item: life satisfaction, scored 0 to 10.'],
      ['ons4-worthwhile', 'ONS4 worthwhile', 'ONS4 item: worthwhile, scored 0 to 10.'],
      ['ons4-happiness', 'ONS4 happiness yesterday', 'ONS4 item: happiness on the previous day, scored 0 to 10.'],
      ['ons4-anxiety', 'ONS4 anxiety yesterday', 'ONS4 item: anxiety on the previous day, scored 0 to 10 (higher is more anxious).'],
      ['swemwbs-total', 'SWEMWBS total (raw)', 'Sum of the seven SWEMWBS item scores, 7 to 35.'],
      ['swemwbs-metric', 'SWEMWBS metric score', 'The SWEMWBS raw total converted with the published conversion table (CodeSystem swemwbs-raw-score), 7.00 to 35.00.'],
    ],
  },
  {
    id: 'sp-outcome-timing',
    title: 'Outcome timing',
    description:
      'When an outcome score was taken relative to the social prescribing ' +
      'support (an Observation.category coding of the outcome profiles).',
    concepts: [
      ['baseline', 'Baseline', 'Taken at or near the start of support.'],
      ['follow-up', 'Follow-up', 'Taken later, to compare with the baseline.'],
    ],
  },
  {
    id: 'sp-definition-kind',
    title: 'Hub definition kinds',
    description:
      'What a Basic resource that configures the hub is (Basic.code): a VCS ' +
      'organisation\'s record mapping (extension sp-record-mapping), read by ' +
      'GET and POST Organization/{id}/$records.',
    concepts: [
      ['vcs-record-mapping', 'VCS record mapping', 'How a VCS organisation\'s own flat records (spreadsheet rows) map to the hub\'s Tasks, contacts, holding work and outcomes: columns, case reference, category map, status words, date format.'],
    ],
  },
  {
    id: 'sp-communication-category',
    title: 'Social prescribing communication categories',
    description:
      'What a Communication on a social prescribing referral is ' +
      '(Communication.category): the message back to the GP that the hub ' +
      'writes when the referral\'s Task ends, profile sp-message-back.',
    concepts: [
      ['message-back', 'Message back to GP', 'The summary for the referring GP practice at the end of social prescribing (PRSB Social Prescribing Information Standard, message back to GP and referrer): who saw the person, contacts, holding work, services connected to, outcomes, how it ended.'],
    ],
  },
];

// SWEMWBS raw total -> metric score: the published Rasch-based conversion
// table distributed with the scale's scoring guidance.
const SWEMWBS_METRIC = {
  7: 7.0, 8: 9.51, 9: 11.25, 10: 12.4, 11: 13.33, 12: 14.08, 13: 14.75,
  14: 15.32, 15: 15.84, 16: 16.36, 17: 16.88, 18: 17.43, 19: 17.98,
  20: 18.59, 21: 19.25, 22: 19.98, 23: 20.73, 24: 21.54, 25: 22.35,
  26: 23.21, 27: 24.11, 28: 25.03, 29: 26.02, 30: 27.03, 31: 28.13,
  32: 29.31, 33: 30.7, 34: 32.55, 35: 35.0,
};

CODE_SYSTEMS.push({
  id: 'swemwbs-raw-score',
  title: 'SWEMWBS raw score to metric score',
  description:
    'The SWEMWBS raw totals 7 to 35, each with the metric score that the ' +
    'published SWEMWBS raw-to-metric conversion table gives for it (property ' +
    'metric). Used to convert and to check the metric component of ' +
    'sp-outcome-swemwbs Observations. Scores only, no questionnaire wording.',
  properties: [
    {
      code: 'metric',
      uri: `${cs('swemwbs-raw-score')}#metric`,
      description: 'The SWEMWBS metric score for this raw total.',
      type: 'decimal',
    },
  ],
  concepts: Object.keys(SWEMWBS_METRIC).map((raw) => [
    String(raw),
    `Raw score ${raw}`,
    `SWEMWBS raw total ${raw}; metric score ${SWEMWBS_METRIC[raw].toFixed(2)}.`,
    { metric: SWEMWBS_METRIC[raw] },
  ]),
});

function codeSystem(def) {
  const r = {
    resourceType: 'CodeSystem',
    id: def.id,
    url: cs(def.id),
    version: VERSION,
    name: pascal(def.id),
    title: def.title,
    status: 'active',
    experimental: false,
    publisher: PUBLISHER,
    description: def.description,
    caseSensitive: true,
    valueSet: vs(def.id),
    content: 'complete',
    count: def.concepts.length,
  };
  if (def.properties) r.property = def.properties;
  r.concept = def.concepts.map(([code, display, definition, props]) => {
    const c = { code, display, definition };
    if (props) {
      c.property = Object.entries(props).map(([p, v]) => {
        const type = def.properties.find((d) => d.code === p).type;
        return type === 'decimal' ? { code: p, valueDecimal: v } : { code: p, valueCode: v };
      });
    }
    return c;
  });
  return r;
}

function valueSet(id, title, description, system, concepts) {
  return {
    resourceType: 'ValueSet',
    id,
    url: vs(id),
    version: VERSION,
    name: pascal(id),
    title,
    status: 'active',
    experimental: false,
    publisher: PUBLISHER,
    description,
    immutable: false,
    compose: {
      include: [
        {
          system,
          concept: concepts.map(([code, display]) => ({ code, display })),
        },
      ],
    },
  };
}

const VALUE_SETS = CODE_SYSTEMS.map((d) =>
  valueSet(
    d.id,
    d.title,
    `All codes of CodeSystem ${d.id}. ${d.description}`,
    cs(d.id),
    d.concepts,
  ),
);
const ONS4 = CODE_SYSTEMS.find((d) => d.id === 'sp-outcome-measure').concepts.filter(([c]) =>
  c.startsWith('ons4-'),
);
VALUE_SETS.push(
  valueSet(
    'sp-outcome-ons4-item',
    'ONS4 items',
    'The four ONS4 personal wellbeing items of CodeSystem sp-outcome-measure: ' +
      'the codes an sp-outcome-ons4 Observation may carry.',
    cs('sp-outcome-measure'),
    ONS4,
  ),
);

// ---------------------------------------------------------------------------
// ConceptMaps: needs <-> SNOMED CT
// ---------------------------------------------------------------------------

// Where each concept id was checked (kept short; displays as published).
const SRC = {
  sdoh: 'Checked in the HL7 SDOH Clinical Care IG examples.',
  efi: 'Checked in UK primary-care code sets (electronic frailty index, social vulnerability).',
  carer: 'Checked in UK primary-care code sets (carer codes).',
  reason: 'Checked in HL7 FHIR value sets of SNOMED CT reason codes.',
  exercise: 'Checked in FHIR physical activity referral examples.',
  sdohTables: 'Checked in published SNOMED CT social-needs code tables.',
  lonely: 'Checked in SNOMED CT emotional-state value sets and UK primary-care code sets.',
};

// need -> [[snomed code, display, equivalence (need -> snomed), source, note]]
const NEED_TO_SNOMED = {
  loneliness: [['267076002', 'Feeling lonely', 'equivalent', SRC.lonely]],
  'social-isolation': [['422650009', 'Social isolation', 'equivalent', SRC.sdoh]],
  'debt-money': [
    ['160932005', 'Financial problem', 'wider', SRC.reason, 'Financial problems also cover benefits and food poverty.'],
  ],
  housing: [
    ['81877007', 'Housing problems', 'equivalent', SRC.efi],
    ['105531004', 'Housing unsatisfactory', 'narrower', SRC.efi, 'One kind of housing need.'],
    ['32911000', 'Homeless', 'narrower', SRC.sdoh, 'One kind of housing need.'],
  ],
  employment: [['73438004', 'Unemployed', 'narrower', SRC.sdoh, 'The need also covers keeping work.']],
  bereavement: [
    ['105441003', 'Death of spouse', 'narrower', SRC.efi, 'One kind of bereavement.'],
    ['135868008', 'Death of partner', 'narrower', SRC.efi, 'One kind of bereavement.'],
  ],
  'physical-activity': [['40979000', 'Lack of physical exercise', 'equivalent', SRC.exercise]],
  'carer-support': [
    ['276040005', 'Looks after someone', 'relatedto', SRC.carer, 'Being a carer, not the need for support itself.'],
  ],
  'food-poverty': [['733423003', 'Food insecurity', 'equivalent', SRC.sdoh]],
  'transport-access': [
    ['266934004', 'Transport problem', 'equivalent', SRC.sdohTables],
    ['713458007', 'Lack of access to transportation', 'narrower', SRC.sdohTables, 'The need also covers physical access.'],
  ],
};
const INVERSE = { equivalent: 'equivalent', wider: 'narrower', narrower: 'wider', relatedto: 'relatedto' };

const needs = CODE_SYSTEMS.find((d) => d.id === 'sp-need').concepts;
const comment = (source, note) => (note ? `${note} ${source}` : source);

const needToSnomed = {
  resourceType: 'ConceptMap',
  id: 'sp-need-to-snomed',
  url: `${BASE}/ConceptMap/sp-need-to-snomed`,
  version: VERSION,
  name: 'SpNeedToSnomed',
  title: 'Social prescribing needs to SNOMED CT',
  status: 'active',
  experimental: false,
  publisher: PUBLISHER,
  description:
    'Maps each sp-need code to the SNOMED CT concepts a GP system may record ' +
    'for it, for translating referrals. Only concept ids checked against ' +
    'published sources are used; a need without one is unmatched.',
  sourceCanonical: vs('sp-need'),
  targetUri: `${SNOMED}?fhir_vs`,
  group: [
    {
      source: cs('sp-need'),
      target: SNOMED,
      element: needs.map(([code, display]) => {
        const targets = NEED_TO_SNOMED[code];
        if (!targets) {
          return {
            code,
            display,
            target: [
              { equivalence: 'unmatched', comment: 'No SNOMED CT concept checked for this need.' },
            ],
          };
        }
        return {
          code,
          display,
          target: targets.map(([c, d, eq, source, note]) => ({
            code: c,
            display: d,
            equivalence: eq,
            comment: comment(source, note),
          })),
        };
      }),
    },
  ],
};

const reverse = new Map();
for (const [need, display] of needs) {
  for (const [c, d, eq, source, note] of NEED_TO_SNOMED[need] ?? []) {
    if (!reverse.has(c)) reverse.set(c, { code: c, display: d, target: [] });
    reverse.get(c).target.push({
      code: need,
      display,
      equivalence: INVERSE[eq],
      comment: comment(source, note),
    });
  }
}
const snomedToNeed = {
  resourceType: 'ConceptMap',
  id: 'snomed-to-sp-need',
  url: `${BASE}/ConceptMap/snomed-to-sp-need`,
  version: VERSION,
  name: 'SnomedToSpNeed',
  title: 'SNOMED CT to social prescribing needs',
  status: 'active',
  experimental: false,
  publisher: PUBLISHER,
  description:
    'The reverse of sp-need-to-snomed: which sp-need a SNOMED CT reason ' +
    'code in an incoming referral stands for. SNOMED CT codes not listed ' +
    'have no need; translate them to sp-need other with the original as text.',
  sourceUri: `${SNOMED}?fhir_vs`,
  targetCanonical: vs('sp-need'),
  group: [
    {
      source: SNOMED,
      target: cs('sp-need'),
      element: [...reverse.values()].sort((a, b) => (a.code < b.code ? -1 : a.code > b.code ? 1 : 0)),
    },
  ],
};

// ---------------------------------------------------------------------------
// StructureDefinitions (differentials on R4)
// ---------------------------------------------------------------------------

const ref = (...types) => [{ code: 'Reference', targetProfile: types.map((t) => `${HL7_SD}/${t}`) }];
const ms = { mustSupport: true };
const coding = (system, code) => (code ? { system, code } : { system });
const cc = (system, code) => ({ coding: [coding(system, code)] });
const required = (id, description) => ({ strength: 'required', description, valueSet: vs(id) });
const has = (system, code) =>
  code
    ? `coding.where(system = '${system}' and code = '${code}').exists()`
    : `coding.where(system = '${system}').exists()`;

// An element of a differential. `slice` is [sliced element path, slice name]:
// the element itself gets sliceName, its children keep the name in their id.
function el(path, props = {}) {
  const { slice, ...rest } = props;
  if (!slice) return { id: path, path, ...rest };
  const [on, name] = slice;
  const id = `${on}:${name}${path.slice(on.length)}`;
  return path === on ? { id, path, sliceName: name, ...rest } : { id, path, ...rest };
}

function profile({ id, type, title, description, purpose, constraints = [], elements }) {
  const root = { id: type, path: type };
  if (constraints.length) {
    root.constraint = constraints.map(([human, expression, severity = 'error'], i) => ({
      key: `${id}-${i + 1}`,
      severity,
      human,
      expression,
      source: sdUrl(id),
    }));
  }
  return {
    resourceType: 'StructureDefinition',
    id,
    url: sdUrl(id),
    version: VERSION,
    name: pascal(id),
    title,
    status: 'active',
    experimental: false,
    publisher: PUBLISHER,
    description,
    purpose,
    fhirVersion: '4.0.1',
    kind: 'resource',
    abstract: false,
    type,
    baseDefinition: `${HL7_SD}/${type}`,
    derivation: 'constraint',
    differential: { element: [root, ...elements] },
  };
}

function extension({ id, title, description, context, value, constraints = [] }) {
  const root = { id: 'Extension', path: 'Extension', short: title, definition: description };
  if (constraints.length) {
    root.constraint = constraints.map(([human, expression], i) => ({
      key: `${id}-${i + 1}`,
      severity: 'error',
      human,
      expression,
      source: sdUrl(id),
    }));
  }
  return {
    resourceType: 'StructureDefinition',
    id,
    url: sdUrl(id),
    version: VERSION,
    name: pascal(id),
    title,
    status: 'active',
    experimental: false,
    publisher: PUBLISHER,
    description,
    fhirVersion: '4.0.1',
    kind: 'complex-type',
    abstract: false,
    context: [{ type: 'element', expression: context }],
    type: 'Extension',
    baseDefinition: `${HL7_SD}/Extension`,
    derivation: 'constraint',
    differential: {
      element: [
        root,
        { id: 'Extension.extension', path: 'Extension.extension', max: '0' },
        { id: 'Extension.url', path: 'Extension.url', fixedUri: sdUrl(id) },
        { id: 'Extension.value[x]', path: 'Extension.value[x]', min: 1, ...value },
      ],
    },
  };
}

const extSlicing = {
  slicing: { discriminator: [{ type: 'value', path: 'url' }], ordered: false, rules: 'open' },
};
const patternSlicing = {
  slicing: { discriminator: [{ type: 'pattern', path: '$this' }], ordered: false, rules: 'open' },
};
const systemSlicing = {
  slicing: { discriminator: [{ type: 'value', path: 'system' }], ordered: false, rules: 'open' },
};
const hasExtension = (url) => `extension.where(url = '${url}').exists()`;

const EXTENSIONS = [
  extension({
    id: 'sp-employment-model',
    title: 'Link worker employment model',
    description:
      'How the link worker in this role is employed: PCN-employed or ' +
      'subcontracted through a VCS organisation (CodeSystem sp-employment-model).',
    context: 'PractitionerRole',
    value: {
      type: [{ code: 'Coding' }],
      binding: required('sp-employment-model', 'Link worker employment models.'),
    },
  }),
  extension({
    id: 'sp-serves-pcn',
    title: 'Primary Care Network served',
    description:
      'The Primary Care Network whose patients the link worker in this role ' +
      'serves (which may differ from the employer in PractitionerRole.organization).',
    context: 'PractitionerRole',
    value: { type: ref('Organization') },
  }),
  extension({
    id: 'sp-registered-list-size',
    title: 'Registered list size',
    description:
      'The number of patients registered with a GP practice, the denominator ' +
      'of per-1,000-patient figures on PCN dashboards.',
    context: 'Organization',
    value: { type: [{ code: 'integer' }] },
    constraints: [['The list size is not negative.', 'value >= 0']],
  }),
  extension({
    id: 'sp-record-mapping',
    title: 'VCS record mapping',
    description:
      'On a Basic with code sp-definition-kind#vcs-record-mapping whose subject ' +
      'is a VCS Organization: the mapping between that organisation\'s flat ' +
      'records and the hub\'s resources, as a JSON document (its format is ' +
      'described in the hub\'s ARCHITECTURE.md, section Translation).',
    context: 'Basic',
    value: { type: [{ code: 'string' }] },
  }),
  extension({
    id: 'sp-trail-actor',
    title: 'Who did this step of a referral trail',
    description:
      'On an entry of the Bundle that GET ServiceRequest/{id}/$trail returns: ' +
      'who made that version (a Task\'s owner, else its requester; a contact\'s ' +
      'first participant; holding work\'s first performer; an outcome\'s first ' +
      'performer; the referral\'s requester; a Communication\'s sender; a ' +
      'Provenance\'s first agent).',
    context: 'Bundle.entry',
    value: {
      type: ref('Practitioner', 'PractitionerRole', 'Organization', 'Patient', 'RelatedPerson', 'Device'),
    },
  }),
  extension({
    id: 'sp-trail-employment-model',
    title: 'Employment model of who did this step of a referral trail',
    description:
      'On an entry of the Bundle that GET ServiceRequest/{id}/$trail returns, ' +
      'when the actor is a link worker role with the sp-employment-model ' +
      'extension: that employment model.',
    context: 'Bundle.entry',
    value: {
      type: [{ code: 'Coding' }],
      binding: required('sp-employment-model', 'Link worker employment models.'),
    },
  }),
];

const sdOutcome = (id, title, description, codeElement, valueRange, extra = []) =>
  profile({
    id,
    type: 'Observation',
    title,
    description,
    purpose:
      'Outcome figures for PCN dashboards: baseline and follow-up scores on ' +
      'the trail of one referral.',
    constraints: [
      ['The category includes survey.', `category.${has(OBS_CATEGORY, 'survey')}`],
      ['The category includes a timing: baseline or follow-up.', `category.${has(cs('sp-outcome-timing'))}`],
      valueRange,
    ],
    elements: [
      el('Observation.basedOn', { short: 'The SP referral', min: 1, max: '1', type: ref('ServiceRequest'), ...ms }),
      el('Observation.status', ms),
      el('Observation.category', { min: 2, ...patternSlicing, ...ms }),
      el('Observation.category', {
        slice: ['Observation.category', 'survey'],
        min: 1,
        max: '1',
        patternCodeableConcept: cc(OBS_CATEGORY, 'survey'),
        ...ms,
      }),
      el('Observation.category', {
        slice: ['Observation.category', 'timing'],
        short: 'baseline | follow-up',
        min: 1,
        max: '1',
        patternCodeableConcept: cc(cs('sp-outcome-timing')),
        binding: required('sp-outcome-timing', 'Outcome timing.'),
        ...ms,
      }),
      codeElement,
      el('Observation.subject', { min: 1, type: ref('Patient'), ...ms }),
      el('Observation.effective[x]', { min: 1, type: [{ code: 'dateTime' }], ...ms }),
      el('Observation.performer', {
        short: 'Who recorded the score: the link worker, or the person themself',
        min: 1,
        type: ref('PractitionerRole', 'Patient'),
        ...ms,
      }),
      el('Observation.value[x]', { min: 1, type: [{ code: 'integer' }], ...ms }),
      ...extra,
    ],
  });

const PROFILES = [
  profile({
    id: 'sp-referral',
    type: 'ServiceRequest',
    title: 'SP referral',
    description:
      'A referral from a GP practice to social prescribing: SNOMED CT ' +
      '871731000000106 Referral to social prescribing service, for a patient ' +
      'identified by NHS number, with the needs it is for.',
    purpose:
      'What a GP clinical system posts to sp-hub; the Task that carries out ' +
      'the referral (sp-task) points at it with Task.focus.',
    constraints: [
      [
        'The code is SNOMED CT 871731000000106 Referral to social prescribing service.',
        `code.${has(SNOMED, '871731000000106')}`,
      ],
      ['At least one reason is a need from CodeSystem sp-need.', `reasonCode.${has(cs('sp-need'))}`],
    ],
    elements: [
      el('ServiceRequest.identifier', { short: "The GP system's referral id", min: 1, ...ms }),
      el('ServiceRequest.status', ms),
      el('ServiceRequest.intent', ms),
      el('ServiceRequest.priority', ms),
      el('ServiceRequest.code', {
        min: 1,
        patternCodeableConcept: {
          coding: [{ system: SNOMED, code: '871731000000106' }],
        },
        ...ms,
      }),
      el('ServiceRequest.subject', { type: ref('Patient'), ...ms }),
      el('ServiceRequest.authoredOn', { min: 1, ...ms }),
      el('ServiceRequest.requester', {
        short: 'The referring GP (PractitionerRole) or practice (Organization)',
        min: 1,
        type: ref('PractitionerRole', 'Organization'),
        ...ms,
      }),
      el('ServiceRequest.performer', {
        short: 'A link worker or organisation named by the referrer; absent = the PCN open pool',
        type: ref('PractitionerRole', 'Organization'),
        ...ms,
      }),
      el('ServiceRequest.reasonCode', {
        short: 'The needs the referral is for',
        min: 1,
        binding: required('sp-need', 'Social prescribing needs.'),
        ...ms,
      }),
      el('ServiceRequest.supportingInfo', {
        short: "The person's consent to share their details with social prescribing",
        type: ref('Consent'),
        ...ms,
      }),
    ],
  }),
  profile({
    id: 'sp-task',
    type: 'Task',
    title: 'SP task',
    description:
      'The work item that carries out an SP referral: Task.focus is the ' +
      'referral, the owner is a link worker (PractitionerRole) or an ' +
      'organisation, and an unowned requested Task is in the open pool. An ' +
      'onward referral to a specific service is a sub-task (Task.partOf).',
    purpose:
      'One trail per referral: status changes, handovers between link workers ' +
      'and outcomes are versions and outputs of this Task.',
    constraints: [
      [
        'statusReason is required when status is rejected, cancelled, on-hold or failed.',
        "(status = 'rejected' or status = 'cancelled' or status = 'on-hold' or status = 'failed') implies statusReason.exists()",
      ],
      ['The code is task-code fulfill.', `code.${has(TASK_CODE, 'fulfill')}`],
      [
        'A Task the owner has taken up (accepted, in-progress, on-hold, completed, failed or rejected) has an owner.',
        "(status = 'accepted' or status = 'in-progress' or status = 'on-hold' or status = 'completed' or status = 'failed' or status = 'rejected') implies owner.exists()",
      ],
    ],
    elements: [
      el('Task.partOf', { short: 'For an onward referral: the main Task', type: ref('Task'), ...ms }),
      el('Task.status', ms),
      el('Task.statusReason', {
        short: 'Why the Task was rejected, cancelled, put on hold or failed',
        binding: required('sp-status-reason', 'Social prescribing Task status reasons.'),
        ...ms,
      }),
      el('Task.businessStatus', {
        binding: required('sp-business-status', 'Social prescribing Task business statuses.'),
        ...ms,
      }),
      el('Task.intent', { fixedCode: 'order', ...ms }),
      el('Task.priority', ms),
      el('Task.code', { min: 1, patternCodeableConcept: cc(TASK_CODE, 'fulfill'), ...ms }),
      el('Task.focus', { short: 'The SP referral', min: 1, type: ref('ServiceRequest'), ...ms }),
      el('Task.for', { short: 'The person referred', min: 1, type: ref('Patient'), ...ms }),
      el('Task.executionPeriod', ms),
      el('Task.authoredOn', ms),
      el('Task.lastModified', ms),
      el('Task.requester', {
        short: 'The referrer (GP practice or GP), or the link worker for a sub-task',
        min: 1,
        type: ref('PractitionerRole', 'Organization'),
        ...ms,
      }),
      el('Task.owner', {
        short: 'The link worker or organisation doing the work; absent = open pool',
        type: ref('Organization', 'PractitionerRole'),
        ...ms,
      }),
      el('Task.note', { short: 'Notes, such as handovers between link workers', ...ms }),
      el('Task.output', { short: 'Outcome scores recorded on this referral', ...ms }),
      el('Task.output.type', { binding: required('sp-outcome-measure', 'Outcome measures.'), ...ms }),
      el('Task.output.value[x]', { type: ref('Observation'), ...ms }),
    ],
  }),
  profile({
    id: 'sp-patient',
    type: 'Patient',
    title: 'SP patient',
    description:
      'A person referred to social prescribing, identified by their NHS number ' +
      '(identifier system https://fhir.nhs.uk/Id/nhs-number).',
    purpose: 'The subject of SP referrals, Tasks, contacts, holding work and outcomes.',
    constraints: [
      ['The NHS number identifier is present.', `identifier.where(system = '${NHS_NUMBER}').exists()`],
    ],
    elements: [
      el('Patient.identifier', { min: 1, ...systemSlicing, ...ms }),
      el('Patient.identifier', { slice: ['Patient.identifier', 'nhsNumber'], min: 1, max: '1', ...ms }),
      el('Patient.identifier.system', { slice: ['Patient.identifier', 'nhsNumber'], min: 1, fixedUri: NHS_NUMBER }),
      el('Patient.identifier.value', {
        slice: ['Patient.identifier', 'nhsNumber'],
        short: 'Ten digits with a valid modulus 11 check digit',
        min: 1,
        ...ms,
      }),
      el('Patient.name', { min: 1, ...ms }),
      el('Patient.telecom', ms),
      el('Patient.gender', ms),
      el('Patient.birthDate', ms),
      el('Patient.address', ms),
      el('Patient.generalPractitioner', {
        short: 'The GP practice the person is registered with',
        type: ref('Organization'),
        ...ms,
      }),
    ],
  }),
  profile({
    id: 'sp-link-worker-role',
    type: 'PractitionerRole',
    title: 'Link worker role',
    description:
      'A social prescribing link worker in one job: the employer ' +
      '(organization), the employment model (PCN-employed or VCS-subcontracted) ' +
      'and the Primary Care Network served, so both kinds of link worker are ' +
      'first-class and reportable.',
    purpose: 'Owner of SP tasks, participant in contacts, performer of holding work.',
    constraints: [
      ['The employment model extension is present.', hasExtension(sdUrl('sp-employment-model'))],
      ['The PCN served extension is present.', hasExtension(sdUrl('sp-serves-pcn'))],
      ['The code includes a role from CodeSystem sp-role.', `code.${has(cs('sp-role'))}`],
    ],
    elements: [
      el('PractitionerRole.extension', { ...extSlicing }),
      el('PractitionerRole.extension', {
        slice: ['PractitionerRole.extension', 'employmentModel'],
        min: 1,
        max: '1',
        type: [{ code: 'Extension', profile: [sdUrl('sp-employment-model')] }],
        ...ms,
      }),
      el('PractitionerRole.extension', {
        slice: ['PractitionerRole.extension', 'servesPcn'],
        min: 1,
        max: '1',
        type: [{ code: 'Extension', profile: [sdUrl('sp-serves-pcn')] }],
        ...ms,
      }),
      el('PractitionerRole.active', ms),
      el('PractitionerRole.period', ms),
      el('PractitionerRole.practitioner', { min: 1, type: ref('Practitioner'), ...ms }),
      el('PractitionerRole.organization', { short: 'The employer', min: 1, type: ref('Organization'), ...ms }),
      el('PractitionerRole.code', { min: 1, ...patternSlicing, ...ms }),
      el('PractitionerRole.code', {
        slice: ['PractitionerRole.code', 'linkWorkerRole'],
        min: 1,
        max: '1',
        patternCodeableConcept: cc(cs('sp-role')),
        binding: required('sp-role', 'Social prescribing roles.'),
        ...ms,
      }),
      el('PractitionerRole.telecom', ms),
    ],
  }),
  profile({
    id: 'sp-organisation',
    type: 'Organization',
    title: 'SP organisation',
    description:
      'An organisation taking part in social prescribing: a GP practice ' +
      '(partOf its PCN), a Primary Care Network, a VCS organisation or an ' +
      'Integrated Care Board. Practices, PCNs and ICBs carry their ODS code.',
    purpose: 'Referrers, employers, Task owners and the units PCN dashboards report on.',
    constraints: [
      ['The type includes a kind from CodeSystem sp-organisation-kind.', `type.${has(cs('sp-organisation-kind'))}`],
      [
        'A GP practice, PCN or ICB has an ODS code.',
        `type.coding.where(system = '${cs('sp-organisation-kind')}' and (code = 'gp-practice' or code = 'pcn' or code = 'icb')).exists() implies identifier.where(system = '${ODS_CODE}').exists()`,
      ],
      [
        'A GP practice names its PCN in partOf.',
        `type.${has(cs('sp-organisation-kind'), 'gp-practice')} implies partOf.exists()`,
        'warning',
      ],
    ],
    elements: [
      el('Organization.extension', { ...extSlicing }),
      el('Organization.extension', {
        slice: ['Organization.extension', 'registeredListSize'],
        short: "A GP practice's registered list size",
        min: 0,
        max: '1',
        type: [{ code: 'Extension', profile: [sdUrl('sp-registered-list-size')] }],
        ...ms,
      }),
      el('Organization.identifier', { ...systemSlicing, ...ms }),
      el('Organization.identifier', { slice: ['Organization.identifier', 'odsCode'], min: 0, max: '1', ...ms }),
      el('Organization.identifier.system', {
        slice: ['Organization.identifier', 'odsCode'],
        min: 1,
        fixedUri: ODS_CODE,
      }),
      el('Organization.identifier.value', { slice: ['Organization.identifier', 'odsCode'], min: 1, ...ms }),
      el('Organization.active', ms),
      el('Organization.type', { min: 1, ...patternSlicing, ...ms }),
      el('Organization.type', {
        slice: ['Organization.type', 'kind'],
        short: 'gp-practice | pcn | vcs | icb',
        min: 1,
        max: '1',
        patternCodeableConcept: cc(cs('sp-organisation-kind')),
        binding: required('sp-organisation-kind', 'Organisation kinds.'),
        ...ms,
      }),
      el('Organization.name', { min: 1, ...ms }),
      el('Organization.telecom', ms),
      el('Organization.address', ms),
      el('Organization.partOf', { short: "A practice's PCN; a PCN's ICB", type: ref('Organization'), ...ms }),
    ],
  }),
  profile({
    id: 'sp-contact',
    type: 'Encounter',
    title: 'SP contact',
    description:
      "A link worker's contact with a person on a referral: how it took place " +
      '(phone, video, face to face, home visit, text or email), when, and how long.',
    purpose: 'Contact counts and durations on the trail and on PCN dashboards.',
    constraints: [
      ['The type is a contact mode from CodeSystem sp-contact-mode.', `type.${has(cs('sp-contact-mode'))}`],
      ['A participant names the link worker.', 'participant.individual.exists()'],
    ],
    elements: [
      el('Encounter.status', ms),
      el('Encounter.class', ms),
      el('Encounter.type', {
        short: 'phone | video | face-to-face | home-visit | text-email',
        min: 1,
        max: '1',
        binding: required('sp-contact-mode', 'Contact modes.'),
        ...ms,
      }),
      el('Encounter.subject', { min: 1, type: ref('Patient'), ...ms }),
      el('Encounter.basedOn', { short: 'The SP referral', min: 1, type: ref('ServiceRequest'), ...ms }),
      el('Encounter.participant', { min: 1, ...ms }),
      el('Encounter.participant.individual', {
        short: 'The link worker',
        min: 1,
        type: ref('PractitionerRole'),
        ...ms,
      }),
      el('Encounter.period', { min: 1, ...ms }),
      el('Encounter.length', { short: 'How long the contact took', ...ms }),
      el('Encounter.serviceProvider', {
        short: "The link worker's employer",
        type: ref('Organization'),
        ...ms,
      }),
    ],
  }),
  profile({
    id: 'sp-holding-work',
    type: 'Procedure',
    title: 'Holding work',
    description:
      'Support a link worker gave that is not a hand-off to a service, often ' +
      'while the person waits for one: what kind (category), for which ' +
      'referral, by whom and when. A Procedure records work done; work still ' +
      'to do is a Task.',
    purpose:
      'Makes holding work visible: PCN dashboards count its hours from the ' +
      'performed period.',
    constraints: [
      ['The category is a kind of holding work from CodeSystem sp-holding-work.', `category.${has(cs('sp-holding-work'))}`],
      ['The performed period has a start and an end.', 'performed.start.exists() and performed.end.exists()'],
    ],
    elements: [
      el('Procedure.basedOn', { short: 'The SP referral', min: 1, max: '1', type: ref('ServiceRequest'), ...ms }),
      el('Procedure.status', ms),
      el('Procedure.category', {
        min: 1,
        binding: required('sp-holding-work', 'Holding work categories.'),
        ...ms,
      }),
      el('Procedure.subject', { type: ref('Patient'), ...ms }),
      el('Procedure.performed[x]', {
        short: 'When the support was given (hours are counted from it)',
        min: 1,
        type: [{ code: 'Period' }],
        ...ms,
      }),
      el('Procedure.performer', { min: 1, ...ms }),
      el('Procedure.performer.actor', { short: 'The link worker', type: ref('PractitionerRole'), ...ms }),
      el('Procedure.performer.onBehalfOf', {
        short: "The link worker's employer",
        type: ref('Organization'),
        ...ms,
      }),
      el('Procedure.note', ms),
    ],
  }),
  sdOutcome(
    'sp-outcome-ons4',
    'ONS4 outcome',
    'One ONS4 personal wellbeing item score (0 to 10), taken at baseline or ' +
      'follow-up on a social prescribing referral. Codes and scores only.',
    el('Observation.code', {
      short: 'Which ONS4 item',
      binding: required('sp-outcome-ons4-item', 'ONS4 items.'),
      ...ms,
    }),
    ['An ONS4 item score is from 0 to 10.', '(value >= 0) and (value <= 10)'],
  ),
  sdOutcome(
    'sp-outcome-swemwbs',
    'SWEMWBS outcome',
    'A SWEMWBS total (raw score 7 to 35), with the metric score from the ' +
      'published conversion table as a component, taken at baseline or ' +
      'follow-up on a social prescribing referral. Codes and scores only.',
    el('Observation.code', { patternCodeableConcept: cc(cs('sp-outcome-measure'), 'swemwbs-total'), ...ms }),
    ['A SWEMWBS raw total is from 7 to 35.', '(value >= 7) and (value <= 35)'],
    [
      el('Observation.component', {
        slicing: { discriminator: [{ type: 'pattern', path: 'code' }], ordered: false, rules: 'open' },
      }),
      el('Observation.component', {
        slice: ['Observation.component', 'metric'],
        short: 'The metric score',
        min: 0,
        max: '1',
        ...ms,
      }),
      el('Observation.component.code', {
        slice: ['Observation.component', 'metric'],
        patternCodeableConcept: cc(cs('sp-outcome-measure'), 'swemwbs-metric'),
      }),
      el('Observation.component.value[x]', {
        slice: ['Observation.component', 'metric'],
        short: 'The metric score for the raw total, as CodeSystem swemwbs-raw-score gives it',
        min: 1,
        type: [{ code: 'Quantity' }],
        ...ms,
      }),
    ],
  ),
  profile({
    id: 'sp-message-back',
    type: 'Communication',
    title: 'Message back to GP',
    description:
      'The summary sp-hub writes for the referring GP practice when the Task ' +
      'of an SP referral ends (and again, as a new version, when an outcome ' +
      'is recorded after that): who saw the person, contacts, holding work, ' +
      'services connected to, outcomes and how it ended, as text, with ' +
      'references to the outcome Observations; SNOMED CT 871711000000103 ' +
      'Social prescribing declined in reasonCode when the person declined.',
    purpose:
      'The PRSB Social Prescribing Information Standard\'s message back to GP ' +
      'and referrer, in a form a GP system can file: found by polling ' +
      'Communication?based-on=ServiceRequest/{id} or the change feed.',
    constraints: [
      ['The category is message-back.', `category.${has(cs('sp-communication-category'), 'message-back')}`],
    ],
    elements: [
      el('Communication.basedOn', { short: 'The SP referral', min: 1, max: '1', type: ref('ServiceRequest'), ...ms }),
      el('Communication.status', { fixedCode: 'completed', ...ms }),
      el('Communication.category', { min: 1, ...patternSlicing, ...ms }),
      el('Communication.category', {
        slice: ['Communication.category', 'messageBack'],
        min: 1,
        max: '1',
        patternCodeableConcept: cc(cs('sp-communication-category'), 'message-back'),
        ...ms,
      }),
      el('Communication.subject', { short: 'The person referred', min: 1, type: ref('Patient'), ...ms }),
      el('Communication.about', { short: 'The Task that carried out the referral', type: ref('Task'), ...ms }),
      el('Communication.sent', { min: 1, ...ms }),
      el('Communication.recipient', {
        short: 'The referring practice (and the referring GP, when the referral names one)',
        min: 1,
        type: ref('Organization', 'PractitionerRole'),
        ...ms,
      }),
      el('Communication.sender', {
        short: 'Who worked the referral: the link worker (PractitionerRole) or the organisation',
        type: ref('PractitionerRole', 'Organization'),
        ...ms,
      }),
      el('Communication.reasonCode', {
        short: 'SNOMED CT 871711000000103 Social prescribing declined, when the person declined',
        ...ms,
      }),
      el('Communication.payload', { short: 'The text summary, then the outcome Observations', min: 1, ...ms }),
      el('Communication.payload.content[x]', {
        type: [{ code: 'string' }, { code: 'Reference', targetProfile: [`${HL7_SD}/Observation`] }],
        ...ms,
      }),
    ],
  }),
];

// ---------------------------------------------------------------------------
// Write
// ---------------------------------------------------------------------------

const OUT = {
  CodeSystem: CODE_SYSTEMS.map(codeSystem),
  ValueSet: VALUE_SETS,
  ConceptMap: [needToSnomed, snomedToNeed],
  StructureDefinition: [...EXTENSIONS, ...PROFILES],
};

for (const [folder, resources] of Object.entries(OUT)) {
  const dir = join(ROOT, folder);
  mkdirSync(dir, { recursive: true });
  const keep = new Set();
  for (const r of resources) {
    const name = `${r.id}.json`;
    if (keep.has(name)) throw new Error(`duplicate ${folder}/${name}`);
    keep.add(name);
    writeFileSync(join(dir, name), `${JSON.stringify(r, null, 2)}\n`);
  }
  for (const f of readdirSync(dir)) {
    if (!keep.has(f)) unlinkSync(join(dir, f));
  }
}
