// Shared pieces of the interface: the message region, the dialog, debouncing, and the row actions menu.
import { html } from "./format.js";
import { plainWords } from "./words.js";

const $ = (id) => document.getElementById(id);

// --- messages: one aria-live region under the header ---------------------------------------------

/** A success (or info) message, read out by screen readers. */
export function announce(text) { showNotice(html`<p class="notice success">${text}</p>`); }

/** An error in plain words, with its action (e.g. "Update billing") when there is one. */
export function reportError(error) {
  const { text, action } = plainWords(error);
  showNotice(html`<p class="notice error"><span>${text}</span>${action ? html` <a class="button" href="${action.href}">${action.label}</a>` : ""}</p>`);
}

function showNotice(markup) {
  const region = $("notices");
  region.innerHTML = `${markup}<button type="button" class="dismiss" aria-label="Dismiss message">×</button>`;
  region.hidden = false;
  region.querySelector(".dismiss").onclick = clearNotice;
}

export function clearNotice() { const region = $("notices"); region.innerHTML = ""; region.hidden = true; }

// --- the dialog: one <dialog>, its content rebuilt on each opening (no handler outlives it) ------

/**
 * Opens the dialog with a form. `body` is html``; `onConfirm(form)` runs on submit and may throw a
 * Problem, shown in the dialog in plain words. Returns {form, close, setError, setBusy, isOpen, signal}:
 * `isOpen()` says whether this opening is still the one on screen (not closed by Escape, Close or a
 * change of screen, nor replaced by another dialog), `signal` is aborted once it is not.
 */
export function openDialog({ title, body, confirmLabel = "Confirm", cancelLabel = "Close", onConfirm, wide = false, danger = false }) {
  const dialog = $("dialog");
  closeDialog();
  const opening = new AbortController();
  current = opening;
  dialog.className = wide ? "wide" : "";
  const form = document.createElement("form");
  form.noValidate = true;
  form.innerHTML = html`
    <h2 id="dialog-title">${title}</h2>
    <div class="dialog-body">${body}</div>
    <div class="dialog-error" role="alert"></div>
    <div class="dialog-actions">
      <button type="button" class="secondary" data-close>${cancelLabel}</button>
      ${onConfirm ? html`<button type="submit" class="${danger ? "danger" : "primary"}" data-confirm>${confirmLabel}</button>` : ""}
    </div>`.toString();
  dialog.replaceChildren(form);
  const confirm = form.querySelector("[data-confirm]");
  const errorBox = form.querySelector(".dialog-error");
  const controller = {
    form,
    confirm,
    signal: opening.signal,
    isOpen() { return current === opening && dialog.open; },
    close() { if (controller.isOpen()) closeDialog(); },
    setError(error) {
      if (!error) { errorBox.innerHTML = ""; return; }
      const { text, action } = typeof error === "string" ? { text: error } : plainWords(error);
      errorBox.innerHTML = html`<p class="notice error">${text}${action ? html` <a class="button" href="${action.href}">${action.label}</a>` : ""}</p>`.toString();
      const link = errorBox.querySelector("a");
      if (link) link.onclick = () => controller.close();
    },
    setBusy(busy) { if (confirm) { confirm.disabled = busy; confirm.setAttribute("aria-busy", String(busy)); } },
  };
  form.querySelector("[data-close]").onclick = () => controller.close();
  form.onsubmit = async (event) => {
    event.preventDefault();
    if (!onConfirm || confirm.disabled) return;
    controller.setError(null);
    controller.setBusy(true);
    try {
      await onConfirm(form);
    } catch (error) {
      if (error?.name !== "AbortError") controller.setError(error);
    } finally {
      controller.setBusy(false);
    }
  };
  dialog.showModal();
  const first = form.querySelector("input:not([type=hidden]):not([disabled]), select, textarea");
  (first || form.querySelector("[data-close]")).focus();
  return controller;
}

let current = null; // the AbortController of the opening on screen

/** Closes the dialog, whichever opening it shows; a response that arrives later does not reopen it. */
export function closeDialog() {
  const dialog = $("dialog");
  if (dialog.open) dialog.close();
  current?.abort();
  current = null;
}

// Escape closes the dialog without us; the event comes a task later, when another opening may be on screen.
$("dialog").addEventListener("close", (event) => { if (!event.target.open) { current?.abort(); current = null; } });

/**
 * Opens the dialog at once, saying that it is loading, for a dialog whose code or data arrive later:
 * the reseller sees that the choice was taken, and can close it (Escape, Close) before it is ready.
 * Whoever fills it checks `isOpen()` after each wait and opens nothing once it is closed.
 */
export function loadingDialog(title, { wide = false } = {}) {
  return openDialog({ title, wide, cancelLabel: "Close", body: html`<p class="muted" role="status">Loading…</p>` });
}

// --- debouncing ---------------------------------------------------------------------------------

/** Calls `fn` once typing has paused for `ms`; each new call cancels the previous timer. */
export function debounce(fn, ms = 300) {
  let timer = null;
  const debounced = (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
  debounced.cancel = () => clearTimeout(timer);
  return debounced;
}

/** Runs the latest request only: the previous one in flight is aborted. */
export function latest() {
  let controller = null;
  return () => { controller?.abort(); controller = new AbortController(); return controller.signal; };
}

// --- the row actions menu (a menu button: Enter/Space/ArrowDown open, arrows move, Escape closes) -----

let openMenu = null;

export function closeMenu(returnFocus = false) {
  if (!openMenu) return;
  const { button, list } = openMenu;
  list.hidden = true;
  button.setAttribute("aria-expanded", "false");
  openMenu = null;
  if (returnFocus) button.focus();
}

function showMenu(button, focusLast = false) {
  closeMenu();
  const list = document.getElementById(button.getAttribute("aria-controls"));
  list.hidden = false;
  button.setAttribute("aria-expanded", "true");
  openMenu = { button, list };
  const items = [...list.querySelectorAll("[role=menuitem]")];
  (focusLast ? items.at(-1) : items[0])?.focus();
}

/** Wires every menu button inside `container`; `onChoose(action, id)` runs for the chosen item. */
export function wireMenus(container, onChoose) {
  container.addEventListener("click", (event) => {
    const button = event.target.closest("[data-menu-button]");
    if (button) {
      if (button.getAttribute("aria-expanded") === "true") closeMenu(); else showMenu(button);
      return;
    }
    const item = event.target.closest("[role=menuitem]");
    if (item) { closeMenu(); onChoose(item.dataset.action, item.dataset.id, item); }
  });
  container.addEventListener("keydown", (event) => {
    const button = event.target.closest("[data-menu-button]");
    if (button && (event.key === "ArrowDown" || event.key === "ArrowUp")) {
      event.preventDefault(); showMenu(button, event.key === "ArrowUp"); return;
    }
    const item = event.target.closest("[role=menuitem]");
    if (!item || !openMenu) return;
    const items = [...openMenu.list.querySelectorAll("[role=menuitem]")];
    const at = items.indexOf(item);
    const moves = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: items.length - 1 };
    if (event.key in moves) {
      event.preventDefault(); items[(moves[event.key] + items.length) % items.length].focus();
    } else if (event.key === "Escape") {
      event.preventDefault(); closeMenu(true);
    } else if (event.key === "Tab") {
      closeMenu();
    }
  });
}

document.addEventListener("click", (event) => {
  if (openMenu && !openMenu.list.contains(event.target) && !openMenu.button.contains(event.target)) closeMenu();
});
