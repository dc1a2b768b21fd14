//! The console's three languages: which one a request gets, its strings, and dates and numbers in
//! its form.
//!
//! The language is `?lang=` (the switch on every page, remembered in a cookie), else the cookie,
//! else the best of `Accept-Language`, else Finnish. Times are shown in Europe/Helsinki, the time
//! the exchange counts deadlines in.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Europe::Helsinki;

use crate::proto::v1 as pb;

/// The cookie that remembers the switch.
pub const LANG_COOKIE: &str = "console_lang";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Fi,
    Sv,
    En,
}

impl Lang {
    pub const ALL: [Lang; 3] = [Lang::Fi, Lang::Sv, Lang::En];

    pub fn code(self) -> &'static str {
        match self {
            Lang::Fi => "fi",
            Lang::Sv => "sv",
            Lang::En => "en",
        }
    }

    /// The language's own name, for the switch.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Fi => "Suomi",
            Lang::Sv => "Svenska",
            Lang::En => "English",
        }
    }

    pub fn parse(code: &str) -> Option<Lang> {
        // `fi-FI`, `sv_FI`, `en-GB`: the primary subtag decides.
        let primary = code
            .trim()
            .split(['-', '_'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match primary.as_str() {
            "fi" => Some(Lang::Fi),
            "sv" => Some(Lang::Sv),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The best supported language of an `Accept-Language` value (RFC 9110 §12.5.4), by weight and
    /// then by order.
    pub fn from_accept_language(value: &str) -> Option<Lang> {
        let mut best: Option<(u16, Lang)> = None;
        for item in value.split(',') {
            let mut parts = item.split(';');
            let Some(lang) = parts.next().and_then(Lang::parse) else {
                continue;
            };
            let weight = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .map_or(1000, |q| {
                    q.trim()
                        .parse::<f32>()
                        .map_or(0, |q| (q.clamp(0.0, 1.0) * 1000.0) as u16)
                });
            if weight > 0 && best.is_none_or(|(w, _)| weight > w) {
                best = Some((weight, lang));
            }
        }
        best.map(|(_, lang)| lang)
    }

    pub fn text(self) -> &'static Text {
        match self {
            Lang::Fi => &FI,
            Lang::Sv => &SV,
            Lang::En => &EN,
        }
    }

    /// A moment, in Helsinki time.
    pub fn time(self, t: DateTime<Utc>) -> String {
        let local = t.with_timezone(&Helsinki);
        match self {
            Lang::Fi => local.format("%-d.%-m.%Y klo %H.%M.%S").to_string(),
            Lang::Sv => local.format("%Y-%m-%d kl. %H:%M:%S").to_string(),
            Lang::En => local.format("%-d %b %Y, %H:%M:%S").to_string(),
        }
    }

    pub fn date(self, d: NaiveDate) -> String {
        match self {
            Lang::Fi => d.format("%-d.%-m.%Y").to_string(),
            Lang::Sv => d.format("%Y-%m-%d").to_string(),
            Lang::En => d.format("%-d %b %Y").to_string(),
        }
    }

    /// An ISO date (`2025-03-14`) as this language writes it; anything else as it is.
    pub fn iso_date(self, text: &str) -> String {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map_or_else(|_| text.to_owned(), |d| self.date(d))
    }

    pub fn timestamp(self, t: Option<&pbjson_types::Timestamp>) -> String {
        t.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
            .map(|t| self.time(t))
            .unwrap_or_default()
    }

    /// A whole number with the language's digit grouping (a no-break space in Finnish and
    /// Swedish, a comma in English).
    pub fn int(self, n: i64) -> String {
        let digits = n.unsigned_abs().to_string();
        let separator = match self {
            Lang::Fi | Lang::Sv => '\u{a0}',
            Lang::En => ',',
        };
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(separator);
            }
            out.push(c);
        }
        if n < 0 { format!("−{out}") } else { out }
    }

    /// A number with one decimal, with the language's decimal mark.
    pub fn decimal(self, x: f64) -> String {
        let text = format!("{x:.1}");
        let (whole, fraction) = text.split_once('.').unwrap_or((&text, "0"));
        let whole = whole
            .parse::<i64>()
            .map_or_else(|_| whole.to_owned(), |w| self.int(w));
        match self {
            Lang::Fi | Lang::Sv => format!("{whole},{fraction}"),
            Lang::En => format!("{whole}.{fraction}"),
        }
    }

    /// A share as a whole percentage (`87 %` in Finnish and Swedish, `87%` in English).
    pub fn percent(self, part: i64, whole: i64) -> String {
        if whole <= 0 {
            return "–".into();
        }
        let p = (part as f64 * 100.0 / whole as f64).round() as i64;
        match self {
            Lang::Fi | Lang::Sv => format!("{p}\u{a0}%"),
            Lang::En => format!("{p}%"),
        }
    }

    /// A duration in seconds as hours, minutes and seconds.
    pub fn duration(self, seconds: i64) -> String {
        let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
        let t = self.text();
        match (h, m) {
            (0, 0) => format!("{s} {}", t.unit_s),
            (0, _) => format!("{m} {} {s} {}", t.unit_min, t.unit_s),
            _ => format!("{} {} {m} {}", self.int(h), t.unit_h, t.unit_min),
        }
    }

    pub fn state(self, state: i32) -> String {
        use pb::referral::State as S;
        let t = self.text();
        match S::try_from(state) {
            Ok(S::Requested) => t.state_requested,
            Ok(S::Received) => t.state_received,
            Ok(S::Accepted) => t.state_accepted,
            Ok(S::InProgress) => t.state_in_progress,
            Ok(S::Completed) => t.state_completed,
            Ok(S::Rejected) => t.state_rejected,
            Ok(S::Cancelled) => t.state_cancelled,
            _ => "–",
        }
        .to_owned()
    }

    pub fn reason(self, name: &str) -> String {
        let t = self.text();
        match name {
            "LIFE_MANAGEMENT" => t.reason_life_management,
            "LIVELIHOOD" => t.reason_livelihood,
            "HOUSING" => t.reason_housing,
            "HEALTH" => t.reason_health,
            "SUBSTANCE_USE" => t.reason_substance_use,
            "FAMILY_AND_CHILDREN" => t.reason_family,
            "EMPLOYMENT" => t.reason_employment,
            "DEBT" => t.reason_debt,
            "OTHER" => t.reason_other,
            other => return other.to_owned(),
        }
        .to_owned()
    }

    pub fn kind(self, kind: i32) -> String {
        use pb::referral::Kind as K;
        let t = self.text();
        match K::try_from(kind) {
            Ok(K::NeedForSocialWork) => t.kind_need_for_social_work,
            Ok(K::SupplementaryOrPreventiveAssistance) => t.kind_supplementary,
            Ok(K::BasicAmountReduced) => t.kind_basic_amount_reduced,
            Ok(K::UnemployedUnder254Months) => t.kind_unemployed_under_25,
            Ok(K::Unemployed25Plus12Months) => t.kind_unemployed_25_plus,
            Ok(K::Immigrant2Months) => t.kind_immigrant,
            Ok(K::PersonalDiscussionRequest) => t.kind_personal_discussion,
            Ok(K::NeedNotificationWithoutConsent) => t.kind_notification,
            Ok(K::ChildWelfareNotification) => t.kind_child_welfare,
            _ => "–",
        }
        .to_owned()
    }

    pub fn deadline(self, kind: i32) -> String {
        use pb::deadline::Kind as K;
        let t = self.text();
        match K::try_from(kind) {
            Ok(K::Receipt) => t.deadline_receipt,
            Ok(K::AssessmentStart) => t.deadline_assessment,
            Ok(K::Completion) => t.deadline_completion,
            _ => "–",
        }
        .to_owned()
    }

    pub fn consent_event(self, kind: i32) -> String {
        use pb::consent_event::Type as T;
        let t = self.text();
        match T::try_from(kind) {
            Ok(T::Granted) => t.consent_granted,
            Ok(T::Used) => t.consent_used,
            Ok(T::Withdrawn) => t.consent_withdrawn,
            Ok(T::Expired) => t.consent_expired,
            _ => "–",
        }
        .to_owned()
    }
}

/// Defines [`Text`] and its three instances, one line per string: key, Finnish, Swedish, English.
macro_rules! texts {
    ($($key:ident: $fi:literal, $sv:literal, $en:literal;)*) => {
        /// Every string the console shows, in one language.
        pub struct Text { $(pub $key: &'static str,)* }
        pub static FI: Text = Text { $($key: $fi,)* };
        pub static SV: Text = Text { $($key: $sv,)* };
        pub static EN: Text = Text { $($key: $en,)* };
    };
}

texts! {
    console: "Lähetekonsoli", "Remisskonsol", "Referral console";
    skip_to_content: "Siirry sisältöön", "Hoppa till innehållet", "Skip to content";
    signed_in_as: "Kirjautunut", "Inloggad", "Signed in as";
    language: "Kieli", "Språk", "Language";
    main_menu: "Päävalikko", "Huvudmeny", "Main menu";
    home: "Etusivu", "Startsida", "Home";
    referrals: "Lähetteet", "Remisser", "Referrals";
    mailbox: "Postilaatikko", "Postlåda", "Mailbox";
    statistics: "Tilastot", "Statistik", "Statistics";
    access_report: "Tietopyyntöraportti", "Registerutdrag", "Subject access report";
    audit_events: "Lokitapahtumat", "Logghändelser", "Audit events";
    consent_log: "Suostumusloki", "Samtyckeslogg", "Consent log";
    checkpoint: "Tarkistuspiste", "Kontrollpunkt", "Checkpoint";
    role_referrer: "Kelan käsittelijä", "Handläggare vid FPA", "Kela handler";
    role_receiver: "Vastaanottajan työntekijä", "Mottagarens personal", "Receiver's staff";
    role_auditor: "Tarkastaja", "Granskare", "Auditor";
    home_intro: "Valitse näkymä valikosta. Jokainen sivun katselu kirjataan lokiin kuten muukin käyttö.", "Välj en vy i menyn. Varje sidvisning loggas som all annan användning.", "Choose a view from the menu. Every page view is recorded in the audit log like any other call.";
    unauthenticated_title: "Henkilökohtainen varmenne tarvitaan", "Personligt certifikat krävs", "A personal certificate is required";
    unauthenticated_body: "Konsoliin kirjaudutaan henkilökohtaisella varmenteella, joka nimeää sekä organisaation että henkilön. Pyynnössä ei ollut sellaista. Yritys on kirjattu lokiin.", "Konsolen kräver ett personligt certifikat som namnger både organisationen och personen. Begäran hade inget sådant. Försöket har loggats.", "The console is signed in to with a personal certificate that names both the organisation and the person. This request had none. The attempt has been recorded in the audit log.";
    refused_title: "Pyyntö hylättiin", "Begäran avslogs", "The request was refused";
    refused_body: "Palvelu hylkäsi pyynnön. Hylkäys on kirjattu lokiin.", "Tjänsten avslog begäran. Avslaget har loggats.", "The exchange refused the request. The refusal has been recorded in the audit log.";
    csrf_refused: "Lomake oli vanhentunut tai se ei tullut tältä sivustolta. Lataa sivu uudelleen ja yritä uudestaan.", "Formuläret var för gammalt eller kom inte från denna webbplats. Ladda om sidan och försök igen.", "The form was too old or did not come from this site. Reload the page and try again.";
    not_found: "Sivua ei ole.", "Sidan finns inte.", "There is no such page.";
    state: "Tila", "Status", "State";
    all_states: "Kaikki tilat", "Alla statusar", "All states";
    show: "Näytä", "Visa", "Show";
    overdue: "Myöhässä", "Försenade", "Overdue";
    overdue_deadlines: "Ylittyneet määräajat", "Överskridna tidsfrister", "Deadlines passed";
    none: "Ei yhtään.", "Inga.", "None.";
    referral: "Lähete", "Remiss", "Referral";
    kind: "Laji", "Typ", "Kind";
    recipient: "Vastaanottaja", "Mottagare", "Recipient";
    created: "Luotu", "Skapad", "Created";
    history: "Koodattu historia", "Kodad historik", "Coded history";
    time: "Aika", "Tid", "Time";
    organization: "Organisaatio", "Organisation", "Organisation";
    coded_reason: "Syykoodi", "Orsakskod", "Coded reason";
    more_not_shown: "Kaikkia ei näytetty; rajaa hakua.", "Alla visades inte; begränsa sökningen.", "Not all are shown; narrow the search.";
    next_page: "Seuraava sivu", "Nästa sida", "Next page";
    mailbox_health: "Postilaatikon tila", "Postlådans hälsa", "Mailbox health";
    pending: "Odottaa", "Väntar", "Pending";
    leased: "Noudettu, kuittaamatta", "Hämtade, okvitterade", "Leased";
    dead_lettered: "Toimittamatta jääneet", "Olevererade", "Dead-lettered";
    oldest_pending: "Vanhin odottava", "Äldsta väntande", "Oldest pending";
    dead_letters: "Toimittamatta jääneet viestit", "Olevererade meddelanden", "Dead letters";
    message: "Viesti", "Meddelande", "Message";
    message_type: "Viestin tyyppi", "Meddelandetyp", "Message type";
    published: "Julkaistu", "Publicerad", "Published";
    dead_letter_reason: "Syy", "Orsak", "Reason";
    redrive: "Toimita uudelleen", "Leverera på nytt", "Redrive";
    redrive_all: "Toimita kaikki uudelleen", "Leverera alla på nytt", "Redrive all";
    redriven: "Uudelleen toimitettavaksi palautettiin", "Återställda för leverans", "Returned for delivery";
    receivers_health: "Vastaanottajien postilaatikot Kelan näkökulmasta", "Mottagarnas postlådor sett från FPA", "Receivers' mailboxes as Kela sees them";
    receivers_health_intro: "Lähetteet, joita vastaanottajan järjestelmä ei ole vielä kuitannut vastaanotetuiksi.", "Remisser som mottagarens system ännu inte har kvitterat som mottagna.", "Referrals the receiver's system has not yet acknowledged as received.";
    unreceived: "Vastaanottamatta", "Ej mottagna", "Unreceived";
    oldest_unreceived: "Vanhin vastaanottamaton", "Äldsta ej mottagna", "Oldest unreceived";
    receipt_overdue: "Vastaanotto myöhässä", "Mottagandet försenat", "Receipt overdue";
    own_mailbox: "Oma postilaatikko", "Egen postlåda", "Own mailbox";
    identity_code: "Henkilötunnus", "Personbeteckning", "Personal identity code";
    identity_code_hint: "Lähetetään vain lomakkeen sisällä, ei koskaan osoitteessa.", "Skickas endast i formuläret, aldrig i adressen.", "Sent only in the form body, never in the address.";
    start_date: "Alkaen", "Från", "From";
    end_date: "Päättyen (ei mukaan lukien)", "Till (ej inräknat)", "Until (exclusive)";
    make_report: "Laadi raportti", "Skapa utdrag", "Make the report";
    report_for: "Rekisteröidyn pseudonyymi", "Den registrerades pseudonym", "The person's pseudonym";
    period: "Ajanjakso", "Period", "Period";
    processing: "Käsittely: kuka käsitteli tietoja ja milloin", "Behandling: vem behandlade uppgifterna och när", "Processing: who processed the data and when";
    disclosures: "Luovutukset: mitä luovutettiin kenelle ja millä perusteella", "Utlämnanden: vad lämnades ut till vem och på vilken grund", "Disclosures: what was disclosed to whom on what basis";
    consent_events: "Suostumustapahtumat", "Samtyckeshändelser", "Consent events";
    user: "Käyttäjä", "Användare", "User";
    method: "Toiminto", "Funktion", "Method";
    resources: "Kohteet", "Objekt", "Resources";
    result: "Tulos", "Resultat", "Result";
    basis: "Peruste", "Grund", "Basis";
    consent_state: "Suostumuksen tila", "Samtyckets status", "Consent state";
    consent: "Suostumus", "Samtycke", "Consent";
    event: "Tapahtuma", "Händelse", "Event";
    print: "Tulosta tai tallenna PDF:ksi selaimen tulostustoiminnolla.", "Skriv ut eller spara som PDF med webbläsarens utskriftsfunktion.", "Print, or save as PDF with the browser's print function.";
    search: "Hae", "Sök", "Search";
    filters: "Rajaukset", "Filter", "Filters";
    resource: "Kohde", "Objekt", "Resource";
    sequence: "Järjestysnro", "Löpnummer", "Sequence";
    correlation_id: "Korrelaatiotunnus", "Korrelations-id", "Correlation id";
    identity_search: "Haku henkilötunnuksella", "Sökning med personbeteckning", "Search by personal identity code";
    tree_size: "Tapahtumia puussa", "Händelser i trädet", "Events in the tree";
    root_hash: "Juurihajautus", "Rothash", "Root hash";
    origin: "Lähde", "Ursprung", "Origin";
    signed_at: "Allekirjoitettu", "Signerad", "Signed";
    verifier_key: "Tarkistusavain", "Verifieringsnyckel", "Verifier key";
    verifier_key_note: "Vertaa avainta muuta kautta saatuun: vain sen kanssa tarkistettu tarkistuspiste todistaa jotain.", "Jämför nyckeln med den du fått på annat sätt: bara en kontrollpunkt verifierad med den bevisar något.", "Compare the key with the one obtained out of band: only a checkpoint verified with that one proves anything.";
    no_checkpoint: "Lokilla ei ole vielä allekirjoitettua tarkistuspistettä.", "Loggen har ännu ingen signerad kontrollpunkt.", "The log has no signed checkpoint yet.";
    verify_now: "Tarkista loki nyt", "Verifiera loggen nu", "Verify the log now";
    verified_title: "Loki tarkistettu", "Loggen verifierad", "The log was verified";
    verify_failed_title: "Lokin tarkistus epäonnistui", "Verifieringen av loggen misslyckades", "The log failed verification";
    checked_signature: "Tarkistuspisteen allekirjoitus on tarkistettu yllä olevalla avaimella.", "Kontrollpunktens signatur har verifierats med nyckeln ovan.", "The checkpoint's signature was checked with the key above.";
    checked_leaves: "Vietyjä tapahtumia luettu ja jokaisen lehden hajautus laskettu uudelleen sen tiedoista", "Exporterade händelser lästa och varje lövs hash beräknad på nytt ur dess data", "Exported events read, each leaf's hash recomputed from its data";
    checked_fields: "Jokaisen tapahtuman näytetyt kentät vastaavat lehden sisältöä.", "Varje händelses visade fält motsvarar lövets innehåll.", "Every event's shown fields match what its leaf holds.";
    checked_root: "Lehdistä laskettu juuri on sama kuin allekirjoitettu juuri", "Roten beräknad ur löven är densamma som den signerade roten", "The root recomputed from the leaves equals the signed root";
    reasons_chart: "Lähetteet syyn mukaan", "Remisser enligt orsak", "Referrals by reason";
    areas_chart: "Lähetteet alueen (vastaanottajan) mukaan", "Remisser enligt område (mottagare)", "Referrals by area (recipient)";
    compliance_chart: "Määräajassa vastaanotetut kuukausittain", "Mottagna inom tidsfristen per månad", "Received within the deadline, by month";
    reason: "Syy", "Orsak", "Reason";
    area: "Alue", "Område", "Area";
    month: "Kuukausi", "Månad", "Month";
    referral_count: "Lähetteitä", "Remisser", "Referrals";
    person_count: "Henkilöitä", "Personer", "People";
    received_count: "Vastaanotettu", "Mottagna", "Received";
    within_deadline: "Määräajassa", "Inom tidsfristen", "Within the deadline";
    share_within: "Osuus määräajassa", "Andel inom tidsfristen", "Share within the deadline";
    median_days: "Mediaani, työpäivää vastaanottoon", "Median, arbetsdagar till mottagande", "Median working days to receipt";
    total: "Yhteensä", "Totalt", "Total";
    suppressed: "•", "•", "•";
    suppressed_note: "• = salattu: alle {} henkilöä tai siitä voisi päätellä salatun luvun.", "• = skyddad: färre än {} personer eller kunde avslöja ett skyddat tal.", "• = suppressed: fewer than {} people, or it would give a suppressed figure away.";
    statistics_window: "Luodut lähetteet", "Skapade remisser", "Referrals created";
    state_requested: "Ohjattu", "Styrd", "Requested";
    state_received: "Vastaanotettu", "Mottagen", "Received";
    state_accepted: "Hyväksytty", "Godkänd", "Accepted";
    state_in_progress: "Arvioinnissa", "Under bedömning", "In progress";
    state_completed: "Valmis", "Slutförd", "Completed";
    state_rejected: "Hylätty", "Avvisad", "Rejected";
    state_cancelled: "Peruttu", "Återkallad", "Cancelled";
    reason_life_management: "Elämänhallinta", "Livskompetens", "Life management";
    reason_livelihood: "Toimeentulo", "Försörjning", "Livelihood";
    reason_housing: "Asuminen", "Boende", "Housing";
    reason_health: "Terveys", "Hälsa", "Health";
    reason_substance_use: "Päihteet", "Missbruk", "Substance use";
    reason_family: "Perhe ja lapset", "Familj och barn", "Family and children";
    reason_employment: "Työllistyminen", "Sysselsättning", "Employment";
    reason_debt: "Velat", "Skulder", "Debt";
    reason_other: "Muu", "Annat", "Other";
    kind_need_for_social_work: "Sosiaalihuollon tarve", "Behov av socialvård", "Need for social work";
    kind_supplementary: "Täydentävä tai ehkäisevä toimeentulotuki", "Kompletterande eller förebyggande utkomststöd", "Supplementary or preventive assistance";
    kind_basic_amount_reduced: "Perusosan alentaminen", "Sänkt grunddel", "Basic amount reduced";
    kind_unemployed_under_25: "Alle 25-vuotias työtön 4 kk", "Arbetslös under 25 år, 4 mån", "Unemployed under 25, 4 months";
    kind_unemployed_25_plus: "25 vuotta täyttänyt työtön 12 kk", "Arbetslös 25 år eller äldre, 12 mån", "Unemployed 25 or over, 12 months";
    kind_immigrant: "Maahanmuuttaja 2 kk", "Invandrare 2 mån", "Immigrant, 2 months";
    kind_personal_discussion: "Henkilökohtaisen keskustelun pyyntö", "Begäran om personligt samtal", "Request for a personal discussion";
    kind_notification: "Yhteydenotto ilman suostumusta (SHL 35 §)", "Kontakt utan samtycke (SVL 35 §)", "Notification without consent (SHL §35)";
    kind_child_welfare: "Lastensuojeluilmoitus (LSL 25 §)", "Barnskyddsanmälan (BSL 25 §)", "Child welfare notification (LSL §25)";
    due_dates: "Määräpäivät", "Förfallodagar", "Due dates";
    deadline_receipt: "Vastaanotto", "Mottagande", "Receipt";
    deadline_assessment: "Arvioinnin aloitus", "Inledning av bedömning", "Assessment start";
    deadline_completion: "Valmistuminen", "Slutförande", "Completion";
    consent_granted: "Annettu", "Givet", "Granted";
    consent_used: "Käytetty", "Använt", "Used";
    consent_withdrawn: "Peruttu", "Återkallat", "Withdrawn";
    consent_expired: "Vanhentunut", "Utgånget", "Expired";
    unit_s: "s", "s", "s";
    unit_min: "min", "min", "min";
    unit_h: "h", "h", "h";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_heaviest_supported_language() {
        assert_eq!(
            Lang::from_accept_language("de-DE, sv;q=0.8, en;q=0.9"),
            Some(Lang::En)
        );
        assert_eq!(Lang::from_accept_language("sv-FI,fi;q=0.5"), Some(Lang::Sv));
        assert_eq!(Lang::from_accept_language("de, fr;q=0.5"), None);
        assert_eq!(
            Lang::from_accept_language("fi;q=0, en;q=0.1"),
            Some(Lang::En)
        );
    }

    #[test]
    fn numbers_and_dates_take_the_languages_form() {
        assert_eq!(Lang::Fi.int(1_234_567), "1\u{a0}234\u{a0}567");
        assert_eq!(Lang::En.int(1_234_567), "1,234,567");
        assert_eq!(Lang::Sv.decimal(2.5), "2,5");
        assert_eq!(Lang::En.decimal(1234.56), "1,234.6");
        let d = NaiveDate::from_ymd_opt(2025, 3, 4).expect("date");
        assert_eq!(Lang::Fi.date(d), "4.3.2025");
        assert_eq!(Lang::Sv.date(d), "2025-03-04");
        assert_eq!(Lang::En.date(d), "4 Mar 2025");
        let t = DateTime::from_timestamp(1_741_075_200, 0).expect("time"); // 2025-03-04 08:00 UTC
        assert_eq!(Lang::Fi.time(t), "4.3.2025 klo 10.00.00");
        assert_eq!(Lang::Sv.time(t), "2025-03-04 kl. 10:00:00");
        assert_eq!(Lang::En.percent(1, 3), "33%");
        assert_eq!(Lang::Fi.percent(2, 3), "67\u{a0}%");
    }
}
