// Live countdowns: every <time data-countdown> says how long until (or since) it, in words.
(function () {
  "use strict";
  function words(seconds) {
    var past = seconds < 0, s = Math.abs(seconds), amount = Math.floor(s), unit = "second";
    var sizes = [[86400, "day"], [3600, "hour"], [60, "minute"]];
    for (var i = 0; i < sizes.length; i++) {
      if (s >= sizes[i][0]) { amount = Math.floor(s / sizes[i][0]); unit = sizes[i][1]; break; }
    }
    var text = amount + " " + unit + (amount === 1 ? "" : "s");
    return past ? text + " ago" : "in " + text;
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("time[data-countdown]").forEach(function (el) {
      var at = Date.parse(el.getAttribute("datetime"));
      if (isNaN(at)) { return; }
      var next = el.nextElementSibling;
      if (next && next.classList.contains("words")) { next.textContent = "(" + words((at - now) / 1000) + ")"; }
    });
    var clock = document.querySelector("[data-clock]");
    if (clock) { clock.textContent = "Now " + new Date(now).toISOString().slice(0, 16).replace("T", " ") + " UTC."; }
  }
  document.addEventListener("DOMContentLoaded", function () { tick(); setInterval(tick, 1000); });
  document.addEventListener("htmx:afterSwap", tick);
})();
