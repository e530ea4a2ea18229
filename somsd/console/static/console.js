// somsd console: the little behaviour HTML does not have. The pages work without it.
"use strict";
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form instanceof HTMLFormElement ? form.dataset.confirm : undefined;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

// Live updates: the server sends one event per new event-log row (server-sent events). A page
// that cares about the row's stream counts it in a polite status banner with a reload link;
// nothing reloads by itself, so a half-typed reason or pickup code is never lost.
(() => {
  const main = document.getElementById("main");
  const banner = document.getElementById("live");
  if (!main || !banner || !main.dataset.live || !window.EventSource) {
    return;
  }
  const watch = main.dataset.watch;
  if (!watch) {
    return;
  }
  let count = 0;
  const source = new EventSource(main.dataset.live);
  source.addEventListener("somsd", (event) => {
    const row = JSON.parse(event.data);
    if (!String(row.stream).startsWith(watch)) {
      return;
    }
    count += 1;
    banner.querySelector("span").textContent = String(count);
    banner.hidden = false;
  });
})();
