#!/usr/bin/env node
// Prints the synthetic demo Primary Care Network as one FHIR R4 transaction
// Bundle (every entry `PUT Type/id`, so loading it twice changes nothing):
//
//   node fhir-profiles/tools/demo-pcn.mjs > fhir-profiles/examples/demo-pcn.json
//
// Everything is made up: organisations, ODS codes (right shape only), people,
// NHS numbers (999 test range, valid modulus 11 check digit), dates (2026).
// The output is deterministic: a seeded generator, fixed order, no clock.
//
// Contents: 1 ICB, 1 PCN, 3 GP practices (partOf the PCN, with list sizes),
// 2 VCS organisations (a wellbeing charity that employs subcontracted link
// workers, and a money advice service that takes onward referrals), 4 link
// workers (2 PCN-employed, 2 VCS-subcontracted), 50 patients, and 50
// referrals with Tasks in every Task status, consents, contacts, holding work,
// onward-referral sub-tasks and ONS4/SWEMWBS outcomes.

const BASE = 'https://sp-hub.example/fhir';
const cs = (id) => `${BASE}/CodeSystem/${id}`;
const profile = (id) => ({ profile: [`${BASE}/StructureDefinition/${id}`] });
const SNOMED = 'http://snomed.info/sct';
const NHS_NUMBER = 'https://fhir.nhs.uk/Id/nhs-number';
const ODS_CODE = 'https://fhir.nhs.uk/Id/ods-organization-code';
const UCUM = 'http://unitsofmeasure.org';
const ACT_CODE = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';

// --- deterministic helpers -------------------------------------------------

let seed = 20260105;
function random() {
  // mulberry32
  seed = (seed + 0x6d2b79f5) | 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const int = (lo, hi) => lo + Math.floor(random() * (hi - lo + 1));
const pick = (list) => list[Math.floor(random() * list.length)];
const pad = (n) => String(n).padStart(3, '0');
const ref = (type, id) => ({ reference: `${type}/${id}` });

// Times are whole minutes in UTC: "2026-01-05T09:30:00Z".
function at(day, minutes = 0) {
  const d = new Date(Date.UTC(2026, 0, 5) + day * 86400000 + minutes * 60000);
  return d.toISOString().replace('.000Z', 'Z');
}

const coding = (system, code, display) => ({ system, code, display });
const concept = (system, code, display) => ({ coding: [coding(system, code, display)] });

// Displays, as the CodeSystems in fhir-profiles/CodeSystem/ define them.
const NEED = {
  loneliness: 'Loneliness',
  'social-isolation': 'Social isolation',
  'debt-money': 'Debt and money',
  housing: 'Housing',
  employment: 'Employment',
  bereavement: 'Bereavement',
  'mental-wellbeing': 'Mental wellbeing',
  'physical-activity': 'Physical activity',
  'carer-support': 'Carer support',
  'benefits-welfare': 'Benefits and welfare',
  'food-poverty': 'Food poverty',
  'domestic-abuse-support': 'Domestic abuse support',
  'substance-use-support': 'Substance use support',
  'education-skills': 'Education and skills',
  'transport-access': 'Transport and access',
  'digital-inclusion': 'Digital inclusion',
  'legal-advice': 'Legal advice',
  other: 'Other',
};
const BUSINESS = {
  'awaiting-contact': 'Awaiting contact',
  'contact-attempted': 'Contact attempted',
  'first-contact-made': 'First contact made',
  'assessment-done': 'Assessment done',
  'support-plan-agreed': 'Support plan agreed',
  'in-holding': 'In holding',
  'onward-referred': 'Onward referred',
  'attending-service': 'Attending service',
  'follow-up-due': 'Follow-up due',
  closed: 'Closed',
};
const REASON = {
  'no-suitable-service': 'No suitable service available',
  'not-ready': 'Person not ready',
  'could-not-contact': 'Could not contact',
  'declined-by-person': 'Declined by the person',
  'out-of-area': 'Out of area',
  'capacity-full': 'Capacity full',
  'needs-clinical-service': 'Needs a clinical service',
  'moved-away': 'Moved away',
  died: 'Died',
};
const HOLDING = {
  'check-in-call': 'Check-in call',
  'emotional-support': 'Emotional support',
  'practical-help': 'Practical help',
  advocacy: 'Advocacy',
  signposting: 'Signposting while waiting',
  'welfare-check': 'Welfare check',
};
const MODE = {
  phone: ['Phone', 'VR', 'virtual', 20, 40],
  video: ['Video', 'VR', 'virtual', 30, 45],
  'face-to-face': ['Face to face', 'AMB', 'ambulatory', 45, 60],
  'home-visit': ['Home visit', 'HH', 'home health', 60, 90],
  'text-email': ['Text or email', 'VR', 'virtual', 10, 15],
};
const MEASURE = {
  'ons4-life-satisfaction': 'ONS4 life satisfaction',
  'ons4-worthwhile': 'ONS4 worthwhile',
  'ons4-happiness': 'ONS4 happiness yesterday',
  'ons4-anxiety': 'ONS4 anxiety yesterday',
  'swemwbs-total': 'SWEMWBS total (raw)',
  'swemwbs-metric': 'SWEMWBS metric score',
};
const SWEMWBS_METRIC = {
  7: 7.0, 8: 9.51, 9: 11.25, 10: 12.4, 11: 13.33, 12: 14.08, 13: 14.75,
  14: 15.32, 15: 15.84, 16: 16.36, 17: 16.88, 18: 17.43, 19: 17.98,
  20: 18.59, 21: 19.25, 22: 19.98, 23: 20.73, 24: 21.54, 25: 22.35,
  26: 23.21, 27: 24.11, 28: 25.03, 29: 26.02, 30: 27.03, 31: 28.13,
  32: 29.31, 33: 30.7, 34: 32.55, 35: 35.0,
};

// NHS number: 10 digits, the last a modulus 11 check digit over the first 9
// (weights 10..2); a remainder giving 10 is not a valid number.
function nhsCheckDigit(nine) {
  const sum = [...nine].reduce((s, d, i) => s + Number(d) * (10 - i), 0);
  const check = 11 - (sum % 11);
  return check === 11 ? 0 : check === 10 ? null : check;
}

// --- organisations and link workers ---------------------------------------

const entries = [];
const put = (resource) =>
  entries.push({
    fullUrl: `${BASE}/${resource.resourceType}/${resource.id}`,
    resource,
    request: { method: 'PUT', url: `${resource.resourceType}/${resource.id}` },
  });

const KIND = {
  'gp-practice': 'GP practice',
  pcn: 'Primary Care Network',
  vcs: 'VCS organisation',
  icb: 'Integrated Care Board',
};
function organisation({ id, kind, name, ods, partOf, listSize, phone, line }) {
  const r = { resourceType: 'Organization', id, meta: profile('sp-organisation') };
  if (listSize !== undefined) {
    r.extension = [{ url: `${BASE}/StructureDefinition/sp-registered-list-size`, valueInteger: listSize }];
  }
  if (ods) r.identifier = [{ system: ODS_CODE, value: ods }];
  r.active = true;
  r.type = [concept(cs('sp-organisation-kind'), kind, KIND[kind])];
  r.name = name;
  r.telecom = [{ system: 'phone', value: phone, use: 'work' }];
  r.address = [{ line: [line], city: 'Riverside', country: 'GB' }];
  if (partOf) r.partOf = ref('Organization', partOf);
  return r;
}

const ICB = 'org-icb';
const PCN = 'org-pcn';
const VCS_WELLBEING = 'org-vcs-wellbeing';
const VCS_MONEY = 'org-vcs-money-advice';
const PRACTICES = [
  { id: 'org-practice-mill-lane', name: 'Mill Lane Surgery', ods: 'A99901', listSize: 9850, line: '4 Mill Lane' },
  { id: 'org-practice-castle-street', name: 'Castle Street Medical Centre', ods: 'A99902', listSize: 12420, line: '27 Castle Street' },
  { id: 'org-practice-orchard', name: 'Orchard Health Practice', ods: 'A99903', listSize: 6730, line: '1 Orchard Way' },
];

put(organisation({ id: ICB, kind: 'icb', name: 'Riverside and Downs Integrated Care Board', ods: 'QZZ', phone: '01632 960100', line: 'Riverside House' }));
put(organisation({ id: PCN, kind: 'pcn', name: 'Riverside North Primary Care Network', ods: 'U99901', partOf: ICB, phone: '01632 960200', line: '4 Mill Lane' }));
PRACTICES.forEach((p, i) =>
  put(organisation({ ...p, kind: 'gp-practice', partOf: PCN, phone: `01632 96030${i}` })),
);
put(organisation({ id: VCS_WELLBEING, kind: 'vcs', name: 'Riverside Community Wellbeing', phone: '01632 960400', line: '12 Market Square' }));
put(organisation({ id: VCS_MONEY, kind: 'vcs', name: 'Riverside Money Advice', phone: '01632 960500', line: '3 Bridge Street' }));

const LINK_WORKERS = [
  { n: 1, given: 'Priya', family: 'Nandra', model: 'pcn-employed', role: 'link-worker-lead', employer: PCN },
  { n: 2, given: 'Tom', family: 'Ashby', model: 'pcn-employed', role: 'link-worker', employer: PCN },
  { n: 3, given: 'Grace', family: 'Okafor', model: 'vcs-subcontracted', role: 'link-worker', employer: VCS_WELLBEING },
  { n: 4, given: 'Dylan', family: 'Price', model: 'vcs-subcontracted', role: 'link-worker', employer: VCS_WELLBEING },
];
const MODEL = { 'pcn-employed': 'PCN-employed', 'vcs-subcontracted': 'VCS-subcontracted' };
const ROLE = { 'link-worker': 'Link worker', 'link-worker-lead': 'Link worker lead' };
const roleId = (n) => `role-lw-${n}`;
const employerOf = (n) => LINK_WORKERS[n - 1].employer;

for (const lw of LINK_WORKERS) {
  put({
    resourceType: 'Practitioner',
    id: `practitioner-lw-${lw.n}`,
    active: true,
    name: [{ family: lw.family, given: [lw.given] }],
  });
}
for (const lw of LINK_WORKERS) {
  put({
    resourceType: 'PractitionerRole',
    id: roleId(lw.n),
    meta: profile('sp-link-worker-role'),
    extension: [
      {
        url: `${BASE}/StructureDefinition/sp-employment-model`,
        valueCoding: coding(cs('sp-employment-model'), lw.model, MODEL[lw.model]),
      },
      { url: `${BASE}/StructureDefinition/sp-serves-pcn`, valueReference: ref('Organization', PCN) },
    ],
    active: true,
    period: { start: '2026-01-02' },
    practitioner: ref('Practitioner', `practitioner-lw-${lw.n}`),
    organization: ref('Organization', lw.employer),
    code: [concept(cs('sp-role'), lw.role, ROLE[lw.role])],
    telecom: [{ system: 'phone', value: `07700 90010${lw.n}`, use: 'work' }],
  });
}

// --- patients ------------------------------------------------------------

const GIVEN = [
  ['Margaret', 'female'], ['David', 'male'], ['Aisha', 'female'], ['Kevin', 'male'],
  ['Joan', 'female'], ['Samuel', 'male'], ['Fatima', 'female'], ['Gareth', 'male'],
  ['Helen', 'female'], ['Imran', 'male'], ['Rosa', 'female'], ['Peter', 'male'],
  ['Chloe', 'female'], ['Arthur', 'male'], ['Nadia', 'female'], ['Lewis', 'male'],
  ['Brenda', 'female'], ['Tariq', 'male'], ['Ellen', 'female'], ['Owen', 'male'],
  ['Sunita', 'female'], ['Frank', 'male'], ['Maria', 'female'], ['Callum', 'male'],
  ['Doreen', 'female'],
];
const FAMILY = [
  'Whitfield', 'Hussain', 'Barker', 'Mensah', 'Lloyd', 'Kowalski', 'Patel', 'Ferris',
  'Doyle', 'Sandhu', 'Greaves', 'Adeyemi', 'Holt', 'Novak', 'Rahman', 'Tate', 'Ellison',
];
const STREETS = ['Church Road', 'Station Road', 'Park Avenue', 'Elm Close', 'Meadow View', 'High Street', 'Canal Walk'];

const PATIENTS = 50;
let nhsBase = 999000100;
const patients = [];
for (let i = 1; i <= PATIENTS; i++) {
  let nine;
  let check;
  do {
    nhsBase += 37;
    nine = String(nhsBase);
    check = nhsCheckDigit(nine);
  } while (check === null);
  const [given, gender] = GIVEN[(i - 1) % GIVEN.length];
  const family = FAMILY[((i - 1) * 7) % FAMILY.length];
  const practice = PRACTICES[(i - 1) % PRACTICES.length];
  const year = int(1938, 2005);
  const p = {
    resourceType: 'Patient',
    id: `patient-${pad(i)}`,
    meta: profile('sp-patient'),
    identifier: [{ system: NHS_NUMBER, value: `${nine}${check}` }],
    name: [{ family, given: [given] }],
    telecom: [{ system: 'phone', value: `07700 900${pad(i)}`, use: 'mobile' }],
    gender,
    birthDate: `${year}-${String(int(1, 12)).padStart(2, '0')}-${String(int(1, 28)).padStart(2, '0')}`,
    address: [{ line: [`${int(1, 120)} ${pick(STREETS)}`], city: 'Riverside', country: 'GB' }],
    generalPractitioner: [ref('Organization', practice.id)],
  };
  patients.push({ resource: p, practice });
  put(p);
}

// --- referrals and their trails ---------------------------------------------

// Oldest referrals first, so the ones that have ended are the oldest.
const PLAN = [
  ...Array(10).fill(['completed']),
  ['failed', 'could-not-contact'],
  ['failed', 'no-suitable-service'],
  ['cancelled', 'declined-by-person'],
  ['cancelled', 'moved-away'],
  ['cancelled', 'died'],
  ['rejected', 'out-of-area'],
  ['rejected', 'capacity-full'],
  ['rejected', 'needs-clinical-service'],
  ['on-hold', 'not-ready'],
  ['on-hold', 'no-suitable-service'],
  ['on-hold', 'capacity-full'],
  ['on-hold', 'not-ready'],
  ...Array(12).fill(['in-progress']),
  ...Array(5).fill(['accepted']),
  ...Array(3).fill(['requested', 'owned']),
  ...Array(5).fill(['requested', 'pool']),
  ['entered-in-error'],
  ['draft'],
  ['draft'],
];
if (PLAN.length !== PATIENTS) throw new Error(`plan has ${PLAN.length} referrals`);

const IN_PROGRESS_STAGES = [
  ['first-contact-made', 1], ['assessment-done', 2], ['support-plan-agreed', 2], ['in-holding', 2],
  ['onward-referred', 2], ['attending-service', 3], ['follow-up-due', 3],
];
const OWNERS = [roleId(1), roleId(2), roleId(3), roleId(4), VCS_WELLBEING];
// Handovers between link workers, across employers: referral number -> [from, to, after contacts].
const HANDOVERS = { 2: [2, 3, 2], 23: [2, 3, 1], 27: [4, 1, 1], 31: [1, 4, 2] };
const NEED_CODES = Object.keys(NEED).filter((c) => c !== 'other');

const consents = [];
const referrals = [];
const tasks = [];
const subtasks = [];
const contacts = [];
const holding = [];
const outcomes = [];

let ownerTurn = 0;
let stageTurn = 0;
PLAN.forEach(([status, detail], k) => {
  const n = k + 1;
  const id = pad(n);
  const { resource: patient, practice } = patients[k];
  const day = Math.round(k * 2.2);
  const authoredOn = at(day, 9 * 60 + int(0, 7) * 30);
  const srId = `referral-${id}`;
  const taskId = `task-${id}`;
  const priority = n % 6 === 0 ? 'urgent' : 'routine';

  // What the referral and its Task look like in this status.
  let stage = null;
  let contactCount = 0;
  if (status === 'completed') contactCount = 4;
  if (status === 'in-progress') {
    [stage, contactCount] = IN_PROGRESS_STAGES[stageTurn++ % IN_PROGRESS_STAGES.length];
  }
  if (status === 'on-hold') contactCount = 2;
  if (status === 'failed' && detail === 'no-suitable-service') contactCount = 2;
  if (status === 'cancelled' && (detail === 'declined-by-person' || detail === 'died')) contactCount = 1;
  const onward = (status === 'completed' && n === 3) || stage === 'onward-referred';

  const needs = new Set();
  if (onward) needs.add('debt-money');
  while (needs.size < (n % 3 === 0 ? 2 : 1) + (onward ? 1 : 0)) needs.add(pick(NEED_CODES));
  if (n === 50) needs.add('other');

  const owned = !['draft', 'entered-in-error'].includes(status) &&
    !(status === 'requested' && detail === 'pool') &&
    !(status === 'cancelled' && detail === 'moved-away');
  let owner = owned ? OWNERS[ownerTurn++ % OWNERS.length] : null;
  const handover = HANDOVERS[n];
  if (handover) owner = roleId(handover[1]);
  // The link worker who has the contacts: the owner, or for an organisation
  // owner, one of its own link workers.
  const workerAt = (i) => {
    if (handover && i < handover[2]) return handover[0];
    if (owner === VCS_WELLBEING) return 4 - (n % 2);
    return owner ? Number(owner.slice(-1)) : null;
  };

  // Consent to share, recorded by the practice with the referral.
  const consentId = `consent-${id}`;
  consents.push({
    resourceType: 'Consent',
    id: consentId,
    status: status === 'entered-in-error' ? 'entered-in-error' : 'active',
    scope: concept('http://terminology.hl7.org/CodeSystem/consentscope', 'patient-privacy', 'Privacy Consent'),
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    patient: ref('Patient', patient.id),
    dateTime: authoredOn,
    performer: [ref('Patient', patient.id)],
    organization: [ref('Organization', practice.id)],
    policy: [{ uri: `${BASE}/policy/social-prescribing-sharing` }],
    provision: { type: 'permit' },
  });

  // Contacts: the first six days after the referral, then every two weeks.
  const contactDays = [];
  for (let i = 0; i < contactCount; i++) contactDays.push(day + 6 + i * 14 + int(0, 3));
  const contactAt = [];
  contactDays.forEach((d, i) => {
    const mode = i === 0 ? 'phone' : pick(Object.keys(MODE));
    const [modeDisplay, cls, clsDisplay, lo, hi] = MODE[mode];
    const minutes = int(lo, hi);
    const startMinute = 10 * 60 + int(0, 12) * 30;
    const start = at(d, startMinute);
    const worker = workerAt(i);
    contactAt.push({ start, worker });
    contacts.push({
      resourceType: 'Encounter',
      id: `contact-${id}-${i + 1}`,
      meta: profile('sp-contact'),
      status: 'finished',
      class: coding(ACT_CODE, cls, clsDisplay),
      type: [concept(cs('sp-contact-mode'), mode, modeDisplay)],
      subject: ref('Patient', patient.id),
      basedOn: [ref('ServiceRequest', srId)],
      participant: [{ individual: ref('PractitionerRole', roleId(worker)) }],
      period: { start, end: at(d, startMinute + minutes) },
      length: { value: minutes, unit: 'min', system: UCUM, code: 'min' },
      serviceProvider: ref('Organization', employerOf(worker)),
    });
  });
  const lastContactDay = contactDays.length ? contactDays[contactDays.length - 1] : day;

  // Holding work while the person waits, or alongside other support.
  const holdingKinds = [];
  if (status === 'on-hold') holdingKinds.push('check-in-call', detail === 'not-ready' ? 'welfare-check' : 'emotional-support');
  if (stage === 'in-holding') holdingKinds.push('emotional-support', 'check-in-call');
  if (stage === 'onward-referred') holdingKinds.push('practical-help');
  if (status === 'failed' && detail === 'no-suitable-service') holdingKinds.push('signposting');
  if (status === 'completed' && n % 2 === 0) holdingKinds.push(n % 4 === 0 ? 'advocacy' : 'signposting');
  holdingKinds.forEach((kind, i) => {
    const d = (contactDays[0] ?? day) + 3 + i * 7;
    const minutes = int(2, 6) * 15;
    const startMinute = 13 * 60 + int(0, 6) * 30;
    const worker = workerAt(contactDays.length);
    holding.push({
      resourceType: 'Procedure',
      id: `holding-${id}-${i + 1}`,
      meta: profile('sp-holding-work'),
      basedOn: [ref('ServiceRequest', srId)],
      status: 'completed',
      category: concept(cs('sp-holding-work'), kind, HOLDING[kind]),
      subject: ref('Patient', patient.id),
      performedPeriod: { start: at(d, startMinute), end: at(d, startMinute + minutes) },
      performer: [
        {
          actor: ref('PractitionerRole', roleId(worker)),
          onBehalfOf: ref('Organization', employerOf(worker)),
        },
      ],
    });
  });

  // Outcomes: baseline at the first contact once there has been an
  // assessment; follow-up at the last contact of a completed referral.
  const outcomeRefs = [];
  const assessed = status === 'completed' || status === 'on-hold' ||
    (stage && stage !== 'first-contact-made');
  const record = (timing, when, worker, scores) => {
    const category = [
      concept('http://terminology.hl7.org/CodeSystem/observation-category', 'survey', 'Survey'),
      concept(cs('sp-outcome-timing'), timing, timing === 'baseline' ? 'Baseline' : 'Follow-up'),
    ];
    const common = (code, profileId) => ({
      resourceType: 'Observation',
      id: `outcome-${id}-${timing}-${code.startsWith('ons4') ? code : 'swemwbs'}`,
      meta: profile(profileId),
      basedOn: [ref('ServiceRequest', srId)],
      status: 'final',
      category,
      code: concept(cs('sp-outcome-measure'), code, MEASURE[code]),
      subject: ref('Patient', patient.id),
      effectiveDateTime: when,
      performer: [ref('PractitionerRole', roleId(worker))],
    });
    for (const item of ['ons4-life-satisfaction', 'ons4-worthwhile', 'ons4-happiness', 'ons4-anxiety']) {
      const o = { ...common(item, 'sp-outcome-ons4'), valueInteger: scores[item] };
      outcomes.push(o);
      outcomeRefs.push([item, o.id]);
    }
    const raw = scores.swemwbs;
    const o = {
      ...common('swemwbs-total', 'sp-outcome-swemwbs'),
      valueInteger: raw,
      component: [
        {
          code: concept(cs('sp-outcome-measure'), 'swemwbs-metric', MEASURE['swemwbs-metric']),
          valueQuantity: { value: SWEMWBS_METRIC[raw], unit: 'score', system: UCUM, code: '{score}' },
        },
      ],
    };
    outcomes.push(o);
    outcomeRefs.push(['swemwbs-total', o.id]);
  };
  if (assessed && contactAt.length) {
    const baseline = {
      'ons4-life-satisfaction': int(2, 5),
      'ons4-worthwhile': int(3, 6),
      'ons4-happiness': int(2, 5),
      'ons4-anxiety': int(5, 9),
      swemwbs: int(14, 22),
    };
    record('baseline', contactAt[0].start, contactAt[0].worker, baseline);
    if (status === 'completed') {
      const last = contactAt[contactAt.length - 1];
      record('follow-up', last.start, last.worker, {
        'ons4-life-satisfaction': Math.min(10, baseline['ons4-life-satisfaction'] + int(1, 3)),
        'ons4-worthwhile': Math.min(10, baseline['ons4-worthwhile'] + int(1, 3)),
        'ons4-happiness': Math.min(10, baseline['ons4-happiness'] + int(0, 3)),
        'ons4-anxiety': Math.max(0, baseline['ons4-anxiety'] - int(1, 3)),
        swemwbs: Math.min(35, baseline.swemwbs + int(2, 6)),
      });
    }
  }

  // The referral: its status follows the Task when the Task has ended.
  const srStatus = {
    draft: 'draft',
    'entered-in-error': 'entered-in-error',
    completed: 'completed',
    rejected: 'revoked',
    cancelled: 'revoked',
    failed: 'revoked',
  }[status] ?? 'active';
  const sr = {
    resourceType: 'ServiceRequest',
    id: srId,
    meta: profile('sp-referral'),
    identifier: [{ system: `${BASE}/Id/gp-referral`, value: `${practice.ods}-2026-${id}` }],
    status: srStatus,
    intent: 'order',
    priority,
    code: concept(SNOMED, '871731000000106', 'Referral to social prescribing service'),
    subject: ref('Patient', patient.id),
    authoredOn,
    requester: ref('Organization', practice.id),
  };
  if (status === 'requested' && detail === 'owned') {
    sr.performer = [ref(owner.startsWith('role-') ? 'PractitionerRole' : 'Organization', owner)];
  }
  sr.reasonCode = [...needs].sort().map((c) =>
    c === 'other'
      ? { ...concept(cs('sp-need'), c, NEED[c]), text: 'Help to find a community choir' }
      : concept(cs('sp-need'), c, NEED[c]),
  );
  sr.supportingInfo = [ref('Consent', consentId)];
  referrals.push(sr);

  // The Task.
  const accepted = owned && !['requested', 'rejected'].includes(status) && !(status === 'cancelled' && detail === 'moved-away');
  const acceptedAt = at(day + 2, 9 * 60);
  let endedAt = null;
  if (status === 'completed') endedAt = at(lastContactDay + 5, 16 * 60);
  if (status === 'failed') endedAt = at(detail === 'could-not-contact' ? day + 30 : lastContactDay + 7, 16 * 60);
  if (status === 'cancelled') endedAt = at(contactCount ? lastContactDay + 1 : day + 10, 15 * 60);
  if (status === 'rejected') endedAt = at(day + 2, 11 * 60);
  if (status === 'entered-in-error') endedAt = at(day, 12 * 60);

  let businessStatus = null;
  if (['completed', 'failed', 'cancelled', 'rejected'].includes(status)) businessStatus = 'closed';
  if (status === 'requested') businessStatus = 'awaiting-contact';
  if (status === 'accepted') businessStatus = n % 2 ? 'awaiting-contact' : 'contact-attempted';
  if (status === 'in-progress') businessStatus = stage;
  if (status === 'on-hold') businessStatus = detail === 'not-ready' ? 'follow-up-due' : 'in-holding';

  const task = { resourceType: 'Task', id: taskId, meta: profile('sp-task'), status };
  if (detail && REASON[detail]) task.statusReason = concept(cs('sp-status-reason'), detail, REASON[detail]);
  if (businessStatus) task.businessStatus = concept(cs('sp-business-status'), businessStatus, BUSINESS[businessStatus]);
  task.intent = 'order';
  task.priority = priority;
  task.code = concept('http://hl7.org/fhir/CodeSystem/task-code', 'fulfill', 'Fulfill the focal request');
  task.focus = ref('ServiceRequest', srId);
  task.for = ref('Patient', patient.id);
  if (accepted) task.executionPeriod = endedAt ? { start: acceptedAt, end: endedAt } : { start: acceptedAt };
  task.authoredOn = authoredOn;
  const lastEvent = [
    authoredOn,
    accepted ? acceptedAt : null,
    endedAt,
    ...contactAt.map((c) => c.start),
    ...holding.filter((h) => h.basedOn[0].reference.endsWith(srId)).map((h) => h.performedPeriod.end),
  ].filter(Boolean).sort().pop();
  task.lastModified = lastEvent;
  task.requester = ref('Organization', practice.id);
  if (owner) task.owner = ref(owner.startsWith('role-') ? 'PractitionerRole' : 'Organization', owner);
  if (handover) {
    const [from, to, after] = handover;
    const when = contactAt[after - 1].start.slice(0, 10);
    task.note = [
      {
        authorReference: ref('Practitioner', `practitioner-lw-${from}`),
        time: at(contactDays[after - 1] + 1, 9 * 60),
        text:
          `Handed over after the contact on ${when} from ${MODEL[LINK_WORKERS[from - 1].model]} ` +
          `link worker (PractitionerRole/${roleId(from)}) to ${MODEL[LINK_WORKERS[to - 1].model]} ` +
          `link worker (PractitionerRole/${roleId(to)}).`,
      },
    ];
  }
  if (status === 'completed' && outcomeRefs.length) {
    task.output = outcomeRefs.map(([code, obsId]) => ({
      type: concept(cs('sp-outcome-measure'), code, MEASURE[code]),
      valueReference: ref('Observation', obsId),
    }));
  }
  tasks.push(task);

  // Onward referral to the money advice service: a sub-task of the main Task.
  if (onward) {
    const worker = workerAt(1);
    const sent = contactDays[1] + 1;
    const done = status === 'completed';
    subtasks.push({
      resourceType: 'Task',
      id: `task-${id}-money-advice`,
      meta: profile('sp-task'),
      partOf: [ref('Task', taskId)],
      status: done ? 'completed' : 'in-progress',
      businessStatus: done
        ? concept(cs('sp-business-status'), 'closed', BUSINESS.closed)
        : concept(cs('sp-business-status'), 'attending-service', BUSINESS['attending-service']),
      intent: 'order',
      priority,
      code: concept('http://hl7.org/fhir/CodeSystem/task-code', 'fulfill', 'Fulfill the focal request'),
      description: 'Onward referral for debt and money advice',
      focus: ref('ServiceRequest', srId),
      for: ref('Patient', patient.id),
      executionPeriod: done
        ? { start: at(sent + 2, 9 * 60), end: at(lastContactDay - 2, 16 * 60) }
        : { start: at(sent + 2, 9 * 60) },
      authoredOn: at(sent, 9 * 60),
      lastModified: done ? at(lastContactDay - 2, 16 * 60) : at(sent + 2, 9 * 60),
      requester: ref('PractitionerRole', roleId(worker)),
      owner: ref('Organization', VCS_MONEY),
    });
  }
});

for (const r of [...consents, ...referrals, ...tasks, ...subtasks, ...contacts, ...holding, ...outcomes]) put(r);

const bundle = { resourceType: 'Bundle', id: 'demo-pcn', type: 'transaction', entry: entries };
process.stdout.write(`${JSON.stringify(bundle, null, 2)}\n`);
