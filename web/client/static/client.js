// Niceties for a browser with JavaScript on; every page works without them.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // A click on the captcha fetches a new picture (the old one stops working).
  for (const button of document.querySelectorAll("button.captcha")) {
    button.addEventListener("click", () => {
      const img = button.querySelector("img");
      img.src = button.dataset.src + "?t=" + Date.now();
    });
  }
  for (const link of document.querySelectorAll("a.captcha-new")) link.hidden = true;

  const english = document.documentElement.lang.startsWith("en");
  const countDown = (button, seconds) => {
    let left = parseInt(seconds, 10);
    if (!(left > 0)) return;
    const text = button.dataset.text || button.textContent;
    button.dataset.text = text;
    button.disabled = true;
    const tick = () => {
      if (left <= 0) { button.disabled = false; button.textContent = text; return; }
      button.textContent = `${text} (${left})`;
      left -= 1;
      setTimeout(tick, 1000);
    };
    tick();
  };
  // A refused resend says how long to wait (Retry-After): count the button down.
  for (const button of document.querySelectorAll("button[data-retry-after]")) {
    countDown(button, button.dataset.retryAfter);
  }

  // A button beside one field ("send code" by the phone number) steps the flow through
  // the API, so what is typed in the other fields stays; the form's version follows.
  for (const button of document.querySelectorAll("button[data-api]")) {
    button.addEventListener("click", async (event) => {
      event.preventDefault();
      const form = button.form;
      const status = document.getElementById(button.dataset.status);
      const body = {};
      for (const name of button.dataset.fields.split(" ").filter(Boolean)) {
        body[name] = form.elements[name].value;
      }
      button.disabled = true;
      let answer;
      try {
        answer = await fetch(button.dataset.api, {
          method: "POST", credentials: "same-origin",
          headers: {"Content-Type": "application/json",
                    "If-Match": `"${form.elements.version.value}"`,
                    "Idempotency-Key": crypto.randomUUID()},
          body: JSON.stringify(body)});
      } catch (e) { button.disabled = false; form.requestSubmit(button); return; }
      if (answer.status === 409 || answer.status === 412) { location.reload(); return; }
      const found = await answer.json();
      button.disabled = false;
      if (answer.ok) {
        form.elements.version.value = found.version;
        const waiting = document.querySelector("[data-poll]");
        if (waiting) waiting.dataset.version = String(found.version);
        status.textContent = button.dataset.done;
        countDown(button, button.dataset.cooldown);
        return;
      }
      const problems = found.errors && found.errors.length ? found.errors : [found.message || {}];
      status.textContent = problems.map((p) => (english ? p.en : p.zh) || "").join(" ");
      countDown(button, answer.headers.get("Retry-After"));
    });
  }

  // A step that waits for a provider (a face scan, a deposit) reloads once it moved on.
  const waiting = document.querySelector("[data-poll]");
  if (waiting) {
    const every = Math.max(1, parseInt(waiting.dataset.every, 10) || 3) * 1000;
    const poll = async () => {
      try {
        const answer = await fetch(waiting.dataset.poll, {credentials: "same-origin"});
        if (answer.ok) {
          const now = await answer.json();
          if (String(now.version) !== waiting.dataset.version) { location.reload(); return; }
        }
      } catch (e) { /* the next try will tell */ }
      setTimeout(poll, every);
    };
    setTimeout(poll, every);
  }

  // Branch search: suggestions as one types; the value sent is the branch's code.
  for (const input of document.querySelectorAll("input[data-search]")) {
    const list = document.getElementById(input.getAttribute("list"));
    let timer = null;
    input.addEventListener("input", () => {
      clearTimeout(timer);
      const q = input.value.trim();
      if (q.length < 2 || /^\d+$/.test(q)) return;
      timer = setTimeout(async () => {
        const answer = await fetch(input.dataset.search + "?q=" + encodeURIComponent(q));
        if (!answer.ok) return;
        const found = await answer.json();
        list.replaceChildren(...found.branches.map((b) => {
          const option = document.createElement("option");
          option.value = b.code;
          option.label = b.name;
          return option;
        }));
      }, 250);
    });
  }

  // Focus on the first field with an error, for keyboards and screen readers.
  const first = document.querySelector("[aria-invalid=true]");
  if (first) first.focus();
});
