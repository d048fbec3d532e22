/* resource.c — which patient: FHIR path/query forms and {patient} route templates (see resource.h). */
/* Not a FHIR validator: only the shapes that name a patient are recognised; everything else is "no id". */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resource.h"
#include "slice.h"

#define SEG_BUF 256	/* longest path segment that is percent-decoded (ids and types are far shorter) */
#define NAME_BUF 32	/* longest query parameter name looked at */
#define ITEM_BUF 512	/* longest comma-list item (a reference) looked at */
#define TSEG_MAX 64	/* segments per template */

/* FHIR R4, R4B and R5 resource types, sorted (strcmp order) for bsearch. */
struct fhir_type {
	const char *name;
	size_t len;
};

#define T(n) { #n, sizeof(#n) - 1 }
static const struct fhir_type fhir_types[] = {
	T(Account), T(ActivityDefinition), T(ActorDefinition), T(AdministrableProductDefinition), T(AdverseEvent),
	T(AllergyIntolerance), T(Appointment), T(AppointmentResponse), T(ArtifactAssessment), T(AuditEvent), T(Basic),
	T(Binary), T(BiologicallyDerivedProduct), T(BiologicallyDerivedProductDispense), T(BodyStructure), T(Bundle),
	T(CapabilityStatement), T(CarePlan), T(CareTeam), T(CatalogEntry), T(ChargeItem), T(ChargeItemDefinition),
	T(Citation), T(Claim), T(ClaimResponse), T(ClinicalImpression), T(ClinicalUseDefinition), T(CodeSystem),
	T(Communication), T(CommunicationRequest), T(CompartmentDefinition), T(Composition), T(ConceptMap),
	T(Condition), T(ConditionDefinition), T(Consent), T(Contract), T(Coverage), T(CoverageEligibilityRequest),
	T(CoverageEligibilityResponse), T(DetectedIssue), T(Device), T(DeviceAssociation), T(DeviceDefinition),
	T(DeviceDispense), T(DeviceMetric), T(DeviceRequest), T(DeviceUsage), T(DeviceUseStatement),
	T(DiagnosticReport), T(DocumentManifest), T(DocumentReference), T(EffectEvidenceSynthesis), T(Encounter),
	T(EncounterHistory), T(Endpoint), T(EnrollmentRequest), T(EnrollmentResponse), T(EpisodeOfCare),
	T(EventDefinition), T(Evidence), T(EvidenceReport), T(EvidenceVariable), T(ExampleScenario),
	T(ExplanationOfBenefit), T(FamilyMemberHistory), T(Flag), T(FormularyItem), T(GenomicStudy), T(Goal),
	T(GraphDefinition), T(Group), T(GuidanceResponse), T(HealthcareService), T(ImagingSelection), T(ImagingStudy),
	T(Immunization), T(ImmunizationEvaluation), T(ImmunizationRecommendation), T(ImplementationGuide),
	T(Ingredient), T(InsurancePlan), T(InventoryItem), T(InventoryReport), T(Invoice), T(Library), T(Linkage),
	T(List), T(Location), T(ManufacturedItemDefinition), T(Measure), T(MeasureReport), T(Media), T(Medication),
	T(MedicationAdministration), T(MedicationDispense), T(MedicationKnowledge), T(MedicationRequest),
	T(MedicationStatement), T(MedicinalProduct), T(MedicinalProductAuthorization),
	T(MedicinalProductContraindication), T(MedicinalProductDefinition), T(MedicinalProductIndication),
	T(MedicinalProductIngredient), T(MedicinalProductInteraction), T(MedicinalProductManufactured),
	T(MedicinalProductPackaged), T(MedicinalProductPharmaceutical), T(MedicinalProductUndesirableEffect),
	T(MessageDefinition), T(MessageHeader), T(MolecularSequence), T(NamingSystem), T(NutritionIntake),
	T(NutritionOrder), T(NutritionProduct), T(Observation), T(ObservationDefinition), T(OperationDefinition),
	T(OperationOutcome), T(Organization), T(OrganizationAffiliation), T(PackagedProductDefinition), T(Parameters),
	T(Patient), T(PaymentNotice), T(PaymentReconciliation), T(Permission), T(Person), T(PlanDefinition),
	T(Practitioner), T(PractitionerRole), T(Procedure), T(Provenance), T(Questionnaire), T(QuestionnaireResponse),
	T(RegulatedAuthorization), T(RelatedPerson), T(RequestGroup), T(RequestOrchestration), T(Requirements),
	T(ResearchDefinition), T(ResearchElementDefinition), T(ResearchStudy), T(ResearchSubject), T(RiskAssessment),
	T(RiskEvidenceSynthesis), T(Schedule), T(SearchParameter), T(ServiceRequest), T(Slot), T(Specimen),
	T(SpecimenDefinition), T(StructureDefinition), T(StructureMap), T(Subscription), T(SubscriptionStatus),
	T(SubscriptionTopic), T(Substance), T(SubstanceDefinition), T(SubstanceNucleicAcid), T(SubstancePolymer),
	T(SubstanceProtein), T(SubstanceReferenceInformation), T(SubstanceSourceMaterial), T(SubstanceSpecification),
	T(SupplyDelivery), T(SupplyRequest), T(Task), T(TerminologyCapabilities), T(TestPlan), T(TestReport),
	T(TestScript), T(Transport), T(ValueSet), T(VerificationResult), T(VisionPrescription),
};
#undef T
#define N_FHIR_TYPES (sizeof(fhir_types) / sizeof(fhir_types[0]))

static const char patient_type[] = "Patient";

struct tseg {
	uint16_t off, len;	/* decoded literal within tmpl.text */
	bool patient;		/* the {patient} segment */
};

struct tmpl {
	char *text;		/* decoded literals, back to back */
	struct tseg seg[TSEG_MAX];
	size_t nseg;
};

struct resource_ctx {
	bool fhir;
	size_t ntemplates;
	struct tmpl t[];
};

/* ---- bytes ---- */

static inline int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Percent-decodes s[0..n) into buf[0..cap). Returns the length, or -1 for a bad escape or no room. */
static ssize_t pct_decode(const char *s, size_t n, char *buf, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		if (o >= cap)
			return -1;
		if (s[i] != '%') {
			buf[o++] = s[i];
			continue;
		}
		int hi, lo;
		if (i + 2 >= n)
			return -1;
		hi = hexval((unsigned char)s[i + 1]);
		lo = hexval((unsigned char)s[i + 2]);
		if (hi < 0 || lo < 0)
			return -1;
		buf[o++] = (char)(hi << 4 | lo);
		i += 2;
	}
	return (ssize_t)o;
}

/* s decoded into buf when it holds '%' and decodes cleanly, else s as sent (a bad escape is never an id). */
static struct slice maybe_decode(const char *s, size_t n, char *buf, size_t cap)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%') {
			ssize_t m = pct_decode(s, n, buf, cap);
			if (m >= 0)
				return (struct slice){ buf, (size_t)m };
			break;
		}
	}
	return (struct slice){ s, n };
}

static inline bool id_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
}

/* FHIR id: [A-Za-z0-9.-]{1,64}; "." and ".." are dot-segments, not ids. */
static bool valid_id(struct slice s)
{
	if (s.len < 1 || s.len > RESOURCE_ID_MAX)
		return false;
	for (size_t i = 0; i < s.len; i++)
		if (!id_char((unsigned char)s.p[i]))
			return false;
	return !(s.p[0] == '.' && (s.len == 1 || (s.len == 2 && s.p[1] == '.')));
}

/* The static name of a known FHIR resource type equal to s, or NULL. */
static const char *fhir_type(struct slice s)
{
	if (s.len < 4 || s.len > RESOURCE_TYPE_MAX || s.p[0] < 'A' || s.p[0] > 'Z')
		return NULL;
	size_t lo = 0, hi = N_FHIR_TYPES;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		const struct fhir_type *t = &fhir_types[mid];
		size_t n = s.len < t->len ? s.len : t->len;
		int r = memcmp(s.p, t->name, n);
		if (!r)
			r = s.len < t->len ? -1 : s.len > t->len;
		if (!r)
			return t->name;
		if (r < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

static void add_id(struct resource *out, struct slice id)
{
	for (size_t i = 0; i < out->n_ids; i++)
		if (memcmp(out->ids[i], id.p, id.len) == 0 && out->ids[i][id.len] == '\0')
			return;
	if (out->n_ids >= RESOURCE_MAX_IDS) {
		out->ids_truncated = true;
		return;
	}
	memcpy(out->ids[out->n_ids], id.p, id.len);
	out->ids[out->n_ids][id.len] = '\0';
	out->n_ids++;
}

static void set_type(struct resource *out, const char *t)
{
	size_t n = strlen(t);	/* a static name, at most RESOURCE_TYPE_MAX */
	memcpy(out->type, t, n + 1);
}

/* ---- path ---- */

struct seg_iter {
	const char *p, *end;
	char buf[SEG_BUF];
};

static void seg_init(struct seg_iter *it, const char *p, size_t n)
{
	it->p = p;
	it->end = p + n;
}

/* The next non-empty segment, percent-decoded when possible; valid until the next call. */
static bool seg_next(struct seg_iter *it, struct slice *out)
{
	/* byte loops, not memchr: segments are a few bytes and the call costs more than the scan */
	while (it->p < it->end) {
		const char *s = it->p, *e = s;
		bool pct = false;
		while (e < it->end && *e != '/') {
			pct |= *e == '%';
			e++;
		}
		it->p = e < it->end ? e + 1 : e;
		if (e == s)
			continue;
		*out = (struct slice){ s, (size_t)(e - s) };
		if (pct) {
			ssize_t m = pct_decode(s, (size_t)(e - s), it->buf, sizeof(it->buf));
			if (m >= 0)
				*out = (struct slice){ it->buf, (size_t)m };
		}
		return true;
	}
	return false;
}

static inline bool is_export_seg(struct slice s)
{
	return slice_eq(s, "$export") || slice_eq(s, "export");
}

/*
 * FHIR REST shape: [base]/Type[/id[/Type2 | /_history/v | /$op ...]].
 * The first known type starts it; an id right after Patient is a patient id;
 * a known type right after the id is a compartment and becomes the type.
 */
enum fstate { F_BASE, F_AFTER_TYPE, F_AFTER_ID, F_DONE };

static const char *scan_path(const struct resource_ctx *rc, const char *path, size_t plen, struct resource *out)
{
	struct seg_iter it;
	struct slice s;
	enum fstate st = F_BASE;
	const char *type = NULL;

	seg_init(&it, path, plen);
	while (seg_next(&it, &s)) {
		if (is_export_seg(s))
			out->is_export = true;
		if (!rc->fhir)
			continue;
		const char *t;
		switch (st) {
		case F_BASE:
			if ((t = fhir_type(s))) {
				type = t;
				st = F_AFTER_TYPE;
			}
			break;
		case F_AFTER_TYPE:
			if (valid_id(s)) {
				if (strcmp(type, patient_type) == 0)
					add_id(out, s);
				st = F_AFTER_ID;
			} else {
				st = F_DONE;	/* _search, _history, $operation */
			}
			break;
		case F_AFTER_ID:
			if ((t = fhir_type(s)))
				type = t;
			st = F_DONE;
			break;
		case F_DONE:
			break;
		}
	}
	return type;
}

/* Whether the whole path matches template t; its {patient} segment goes to *id (copied into idbuf). */
static bool match_template(const struct tmpl *t, const char *path, size_t plen, char *idbuf, struct slice *id)
{
	struct seg_iter it;
	struct slice s;
	size_t k = 0;

	seg_init(&it, path, plen);
	while (seg_next(&it, &s)) {
		if (k >= t->nseg)
			return false;
		const struct tseg *g = &t->seg[k++];
		if (g->patient) {
			if (!valid_id(s))
				return false;
			memcpy(idbuf, s.p, s.len);
			*id = (struct slice){ idbuf, s.len };
		} else if (s.len != g->len || memcmp(s.p, t->text + g->off, s.len) != 0) {
			return false;
		}
	}
	return k == t->nseg;
}

/* ---- query ---- */

enum param { P_NONE, P_PATIENT, P_SUBJECT, P_SUBJECT_PATIENT, P_ID, P_COUNT };

static enum param classify(struct slice n)
{
	if (slice_eq(n, "patient") || slice_eq(n, "patient:Patient"))
		return P_PATIENT;
	if (slice_eq(n, "subject"))
		return P_SUBJECT;
	if (slice_eq(n, "subject:Patient"))
		return P_SUBJECT_PATIENT;
	if (slice_eq(n, "_id"))
		return P_ID;
	if (slice_eq(n, "_count"))
		return P_COUNT;
	return P_NONE;
}

/* The id of the first "Patient/{id}" pair among the '/' parts of a reference, if any. */
static bool reference_patient(struct slice r, struct slice *id)
{
	const char *p = r.p, *end = r.p + r.len;
	bool prev_patient = false;
	for (;;) {
		const char *e = memchr(p, '/', (size_t)(end - p));
		if (!e)
			e = end;
		struct slice part = { p, (size_t)(e - p) };
		if (prev_patient && valid_id(part)) {
			*id = part;
			return true;
		}
		prev_patient = slice_eq(part, patient_type);
		if (e == end)
			return false;
		p = e + 1;
	}
}

static void take_item(enum param k, struct slice item, struct resource *out)
{
	struct slice id;
	if (!item.len)
		return;
	if (!memchr(item.p, '/', item.len)) {
		if (k != P_SUBJECT && valid_id(item))
			add_id(out, item);
		return;
	}
	if (k != P_ID && reference_patient(item, &id))
		add_id(out, id);
}

/*
 * Splits the percent-decoded value v into comma-list items (a %2C separates
 * too, a FHIR-escaped "\\," does not) and takes each.
 */
static void take_list(enum param k, const char *v, size_t n, struct resource *out)
{
	char item[ITEM_BUF];
	size_t len = 0;
	bool over = false, esc = false;
	for (size_t i = 0; i <= n; i++) {
		int c;
		if (i == n) {
			c = -1;
		} else if (v[i] == '%' && i + 2 < n && hexval((unsigned char)v[i + 1]) >= 0 &&
			   hexval((unsigned char)v[i + 2]) >= 0) {
			c = hexval((unsigned char)v[i + 1]) << 4 | hexval((unsigned char)v[i + 2]);
			i += 2;
		} else {
			c = (unsigned char)v[i];
		}
		if (c == -1 || (c == ',' && !esc)) {
			if (!over)
				take_item(k, (struct slice){ item, len }, out);
			len = 0;
			over = esc = false;
			continue;
		}
		esc = c == '\\' && !esc;
		if (len < sizeof(item))
			item[len++] = (char)c;
		else
			over = true;	/* too long to be anything we read: dropped */
	}
}

/* Decimal _count, saturating; -1 when not a plain number. */
static long count_value(const char *v, size_t n)
{
	char buf[24];
	struct slice s = maybe_decode(v, n, buf, sizeof(buf));
	if (!s.len)
		return -1;
	long x = 0;
	for (size_t i = 0; i < s.len; i++) {
		if (s.p[i] < '0' || s.p[i] > '9')
			return -1;
		if (x < 1000000000L)
			x = x * 10 + (s.p[i] - '0');
	}
	return x;
}

static void scan_query(const char *type, const char *q, size_t qlen, struct resource *out)
{
	const char *p = q, *end = q + qlen;
	bool is_patient = type && strcmp(type, patient_type) == 0;
	while (p < end) {
		const char *amp = p, *eq = NULL;
		while (amp < end && *amp != '&') {
			if (!eq && *amp == '=')
				eq = amp;
			amp++;
		}
		const char *nend = eq ? eq : amp;
		const char *v = eq ? eq + 1 : amp;
		char nbuf[NAME_BUF];
		struct slice name = maybe_decode(p, (size_t)(nend - p), nbuf, sizeof(nbuf));
		enum param k = classify(name);
		size_t vlen = (size_t)(amp - v);
		switch (k) {
		case P_COUNT:
			if (count_value(v, vlen) >= RESOURCE_EXPORT_COUNT)
				out->is_export = true;
			break;
		case P_ID:
			if (is_patient)
				take_list(k, v, vlen, out);
			break;
		case P_PATIENT:
		case P_SUBJECT:
		case P_SUBJECT_PATIENT:
			if (type)
				take_list(k, v, vlen, out);
			break;
		case P_NONE:
			break;
		}
		p = amp + 1;
	}
}

/* ---- public ---- */

void resource_opts_default(struct resource_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->fhir = true;
}

static int tmpl_fail(char *err, size_t errlen, size_t i, const char *t, const char *why)
{
	if (err && errlen)
		snprintf(err, errlen, "template %zu \"%.*s\": %s", i + 1, t ? 80 : 6, t ? t : "(null)", why);
	return -EINVAL;
}

static int tmpl_compile(struct tmpl *t, size_t i, const char *src, char *err, size_t errlen)
{
	if (!src || !src[0])
		return tmpl_fail(err, errlen, i, src, "empty");
	size_t n = strnlen(src, RESOURCE_TEMPLATE_MAX + 1);
	if (n > RESOURCE_TEMPLATE_MAX)
		return tmpl_fail(err, errlen, i, src, "longer than 512 bytes");
	if (src[0] != '/')
		return tmpl_fail(err, errlen, i, src, "must start with '/'");
	if (strpbrk(src, "?#"))
		return tmpl_fail(err, errlen, i, src, "must be a path only (no '?' or '#')");
	t->text = malloc(n + 1);
	if (!t->text)
		return -ENOMEM;

	size_t o = 0, npat = 0;
	const char *p = src, *end = src + n;
	t->nseg = 0;
	while (p < end) {
		const char *e = memchr(p, '/', (size_t)(end - p));
		if (!e)
			e = end;
		size_t sl = (size_t)(e - p);
		if (sl) {
			if (t->nseg >= TSEG_MAX)
				return tmpl_fail(err, errlen, i, src, "more than 64 segments");
			struct tseg *g = &t->seg[t->nseg++];
			if (sl == 9 && memcmp(p, "{patient}", 9) == 0) {
				g->patient = true;
				npat++;
			} else if (memchr(p, '{', sl) || memchr(p, '}', sl)) {
				return tmpl_fail(err, errlen, i, src,
						 "only {patient} is supported, as a whole path segment");
			} else {
				ssize_t m = pct_decode(p, sl, t->text + o, n + 1 - o);
				if (m < 0)
					return tmpl_fail(err, errlen, i, src, "bad percent-escape");
				g->patient = false;
				g->off = (uint16_t)o;
				g->len = (uint16_t)m;
				o += (size_t)m;
			}
		}
		p = e + 1;
	}
	if (npat != 1)
		return tmpl_fail(err, errlen, i, src, "must contain exactly one {patient}");
	return 0;
}

struct resource_ctx *resource__new(const struct resource_opts *o, char *err, size_t errlen)
{
	if (err && errlen)
		err[0] = '\0';
	if (!o || o->ntemplates > RESOURCE_MAX_TEMPLATES) {
		if (err && errlen)
			snprintf(err, errlen, "at most %d templates", RESOURCE_MAX_TEMPLATES);
		errno = EINVAL;
		return NULL;
	}
	struct resource_ctx *rc = calloc(1, sizeof(*rc) + o->ntemplates * sizeof(struct tmpl));
	if (!rc) {
		errno = ENOMEM;
		return NULL;
	}
	rc->fhir = o->fhir;
	for (size_t i = 0; i < o->ntemplates; i++) {
		rc->ntemplates = i + 1;	/* so __free releases a partly compiled one */
		int r = tmpl_compile(&rc->t[i], i, o->templates[i], err, errlen);
		if (r) {
			if (r == -ENOMEM && err && errlen)
				snprintf(err, errlen, "out of memory");
			resource__free(rc);
			errno = -r;
			return NULL;
		}
	}
	return rc;
}

void resource__free(struct resource_ctx *rc)
{
	if (!rc)
		return;
	for (size_t i = 0; i < rc->ntemplates; i++)
		free(rc->t[i].text);
	free(rc);
}

int resource__extract(const struct resource_ctx *rc, const char *path, size_t plen, const char *query, size_t qlen,
		      struct resource *out)
{
	if (!rc || !out)
		return -EINVAL;
	out->type[0] = '\0';
	out->n_ids = 0;
	out->ids_truncated = false;
	out->is_export = false;
	if (!path)
		plen = 0;
	if (!query)
		qlen = 0;

	const char *ftype = scan_path(rc, path, plen, out), *type = ftype;
	for (size_t i = 0; i < rc->ntemplates; i++) {
		char idbuf[SEG_BUF];
		struct slice id;
		if (match_template(&rc->t[i], path, plen, idbuf, &id)) {
			add_id(out, id);
			if (!type)
				type = patient_type;
		}
	}
	if (rc->fhir && qlen)
		scan_query(ftype, query, qlen, out);	/* a template match never opens the query */
	if (type)
		set_type(out, type);
	return (int)out->n_ids;
}
