// The price list card: view any version (GET /api/prices?version=N), edit the
// current one and save it as the next version (PUT /api/prices with the
// version it was based on, so an edit made meanwhile elsewhere is a 409 and
// not silently overwritten).

import { api, ApiError } from "./api.js";
import { formatMoney, setTime } from "./format.js";
import {
  formatHundredths, parseHundredths, validateDescription, validateTaxRate, validateUnitPrice,
} from "./validate.js";

// "products[2].unitPriceCents must be ..." names the row and the field.
const SERVER_FIELD_RE = /^products\[(\d+)\]\.(description|unitPriceCents)\b/;

export class PricePanel {
  /** @param {Record<string, HTMLElement>} els the card's elements, by id without the "prices-" prefix */
  constructor(els) {
    this.els = els;
    this.latest = null; // the newest version number known
    this.shown = null; // the price list on screen, as the API returned it
    this.editing = false;
    this.saving = false;
    this.stale = false; // a save was refused because the list changed meanwhile
    this.loadSeq = 0;
  }

  start() {
    const { select, form, edit, discard, latest } = this.els;
    select.addEventListener("change", () => this.show(Number(select.value)));
    edit.addEventListener("click", () => this.beginEdit());
    discard.addEventListener("click", () => this.endEdit(null));
    latest.addEventListener("click", () => this.show(null, { status: null }));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.save();
    });
    // Checked as typed, like the start form: an error appearing on blur would move the
    // Save button under the pointer of a person clicking it.
    form.addEventListener("input", (event) => {
      if (event.target instanceof HTMLInputElement) this.check(event.target);
    });
    form.addEventListener("focusout", (event) => {
      if (event.target instanceof HTMLInputElement) this.check(event.target);
    });
    this.show(null);
  }

  /** Show version `version` (null: the current one) in view mode. */
  async show(version, { status } = {}) {
    const seq = ++this.loadSeq;
    this.showError(null);
    try {
      const list = await api.prices(version);
      if (seq !== this.loadSeq) return;
      this.latest = version === null ? list.version : Math.max(this.latest ?? 0, list.version);
      this.shown = list;
      this.editing = false;
      this.stale = false;
      if (status !== undefined) this.showStatus(status);
      this.render();
    } catch (err) {
      if (seq !== this.loadSeq) return;
      this.showError(`Could not load the price list: ${err.message}`);
    }
  }

  async beginEdit() {
    // Edit the newest version there is, not the one loaded minutes ago.
    const before = this.shown?.version;
    await this.show(null, { status: null });
    if (!this.shown || this.shown.version !== this.latest) return;
    if (before !== undefined && before !== this.shown.version) {
      this.showStatus(`Version ${this.shown.version} was saved meanwhile; it is the one you are editing.`);
    }
    this.editing = true;
    this.render();
    this.els.rows.querySelector("input[data-field='unitPriceCents']")?.focus();
  }

  endEdit(status) {
    this.editing = false;
    this.stale = false;
    this.showError(null);
    this.showStatus(status);
    this.render();
  }

  // ---------------------------------------------------------------- rendering

  /** Everything, the rows (and so any input) included. */
  render() {
    const list = this.shown;
    if (!list) return;
    this.els.taxField.hidden = !this.editing;
    if (this.editing) this.els.tax.value = formatHundredths(list.taxBasisPoints);
    this.els.rows.replaceChildren(...list.products.map((product, i) => this.row(product, i)));
    this.renderControls();
  }

  /** The version picker, the description line and the buttons; inputs keep what was typed. */
  renderControls() {
    const list = this.shown;
    const { select, meta, edit, save, discard, latest } = this.els;
    const current = list.version === this.latest;
    select.replaceChildren(...this.versionOptions());
    select.value = String(list.version);
    select.disabled = this.editing || this.saving;
    this.renderMeta(meta, list, current);
    edit.hidden = this.editing || !current;
    save.hidden = !this.editing;
    discard.hidden = !this.editing;
    latest.hidden = !this.stale;
    save.disabled = this.saving || this.stale;
    save.textContent = this.saving ? "Saving…" : "Save as new version";
  }

  versionOptions() {
    const options = [];
    for (let v = this.latest; v >= 1; v--) {
      const option = document.createElement("option");
      option.value = String(v);
      option.textContent = v === this.latest ? `v${v} (current)` : `v${v}`;
      options.push(option);
    }
    return options;
  }

  renderMeta(meta, list, current) {
    const when = document.createElement("time");
    setTime(when, list.updatedAt);
    const state = current ? " (current)" : ", superseded: only the current version can be edited";
    meta.replaceChildren(
      `Version ${list.version} of ${this.latest}${state} · since `,
      when,
      ` · tax ${formatHundredths(list.taxBasisPoints)} % · ${list.currency}`,
    );
    meta.dataset.version = String(list.version);
  }

  row(product, i) {
    const tr = document.createElement("tr");
    tr.dataset.sku = product.sku;
    const sku = document.createElement("th");
    sku.scope = "row";
    sku.className = "mono";
    sku.textContent = product.sku;
    const description = document.createElement("td");
    const price = document.createElement("td");
    price.className = "num";
    if (this.editing) {
      description.append(...this.input(i, "description", product.description, `Description of ${product.sku}`));
      price.append(...this.input(i, "unitPriceCents", formatHundredths(product.unitPriceCents), `Unit price of ${product.sku}`));
    } else {
      description.textContent = product.description;
      price.textContent = formatMoney(product.unitPriceCents, this.shown.currency);
    }
    tr.append(sku, description, price);
    return tr;
  }

  input(i, field, value, label) {
    const input = document.createElement("input");
    input.type = "text";
    input.id = `price-${field}-${i}`;
    input.value = value;
    input.autocomplete = "off";
    input.spellcheck = false;
    input.dataset.row = String(i);
    input.dataset.field = field;
    input.setAttribute("aria-label", label);
    if (field === "unitPriceCents") input.inputMode = "decimal";
    const error = document.createElement("p");
    error.id = `${input.id}-error`;
    error.className = "field-error";
    error.hidden = true;
    input.setAttribute("aria-describedby", error.id);
    return [input, error];
  }

  // ---------------------------------------------------------------- validation

  validator(input) {
    if (input === this.els.tax) return validateTaxRate;
    return input.dataset.field === "description" ? validateDescription : validateUnitPrice;
  }

  check(input) {
    if (!this.editing || input.type !== "text") return true;
    const message = this.validator(input)(input.value);
    this.showFieldError(input, message);
    return message === null;
  }

  showFieldError(input, message) {
    const out = document.getElementById(`${input.id}-error`);
    if (!out) return;
    out.textContent = message || "";
    out.hidden = !message;
    if (message) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }

  /** The inputs as a PUT body, or null after marking every bad field. */
  collect() {
    const inputs = [this.els.tax, ...this.els.rows.querySelectorAll("input")];
    const invalid = inputs.filter((input) => !this.check(input));
    if (invalid.length) {
      invalid[0].focus();
      return null;
    }
    const products = this.shown.products.map((product, i) => ({
      sku: product.sku,
      description: this.els.rows.querySelector(`#price-description-${i}`).value,
      unitPriceCents: parseHundredths(this.els.rows.querySelector(`#price-unitPriceCents-${i}`).value),
    }));
    return { products, taxBasisPoints: parseHundredths(this.els.tax.value), baseVersion: this.shown.version };
  }

  // ---------------------------------------------------------------- saving

  async save() {
    if (!this.editing || this.saving || this.stale) return;
    this.showError(null);
    const body = this.collect();
    if (!body) return;
    this.saving = true;
    this.renderControls();
    try {
      const stored = await api.putPrices(body);
      this.saving = false;
      this.latest = stored.version;
      this.shown = stored;
      this.endEdit(`Saved as version ${stored.version}. Batches started from now on bill at these prices.`);
    } catch (err) {
      this.saving = false;
      this.refused(err);
    }
  }

  refused(err) {
    const message = err instanceof ApiError ? err.message : String(err);
    if (err instanceof ApiError && err.status === 409) {
      const now = err.body?.currentVersion;
      if (typeof now === "number") this.latest = now;
      this.stale = true;
      this.renderControls();
      this.showError(`Not saved: the price list changed meanwhile (version ${now ?? "?"} is now the current one). `
        + "Your changes are still shown here; load the latest version and apply them to it.");
      this.els.latest.focus();
      return;
    }
    this.renderControls();
    const field = err instanceof ApiError && err.status === 400 ? this.fieldOf(message) : null;
    if (field) {
      this.showFieldError(field, message);
      field.focus();
    }
    this.showError(`Not saved: ${message}`);
  }

  fieldOf(message) {
    if (message.startsWith("taxBasisPoints")) return this.els.tax;
    const m = SERVER_FIELD_RE.exec(message);
    return m ? this.els.rows.querySelector(`#price-${m[2]}-${m[1]}`) : null;
  }

  // ---------------------------------------------------------------- messages

  showError(message) {
    this.els.error.textContent = message || "";
    this.els.error.hidden = !message;
  }

  showStatus(message) {
    if (message === undefined) return;
    this.els.status.textContent = message || "";
  }
}
