// The threat page's script (inlined by threat_html.cpp after Chart.js). It reads the data block,
// draws the verdict chart and, when the evidence holds an attack run, robust accuracy per attack
// against eps with the policy's threshold; then checks its own work: each canvas must hold drawn
// pixels, and every row of the data must be a row of the table (body data-rows). Text reaches the
// page through textContent or the canvas, never as HTML.
(function () {
  'use strict';

  const data = JSON.parse(document.getElementById('threat-data').textContent);
  const VERDICT_COLORS = {pass: '#1a7f37', warn: '#bf8700', fail: '#cf222e', missing: '#6e7781'};
  const PALETTE = ['#0969da', '#cf222e', '#1a7f37', '#8250df', '#bf8700', '#1b7c83', '#e16f24', '#57606a'];
  Chart.defaults.animation = false;
  Chart.defaults.font.size = 12;

  function verdictChart(canvas) {
    const names = ['pass', 'warn', 'fail', 'missing'];
    return new Chart(canvas, {
      type: 'bar',
      data: {
        labels: names,
        datasets: [{label: 'checks', data: names.map((n) => data.counts[n]),
                    backgroundColor: names.map((n) => VERDICT_COLORS[n])}]
      },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false, indexAxis: 'y',
        scales: {x: {beginAtZero: true, ticks: {precision: 0}, title: {display: true, text: 'checks'}}},
        plugins: {legend: {display: false}}
      }
    });
  }

  function robustnessChart(canvas) {
    const attack = data.evidence.attack;
    const byAttack = new Map();
    for (const r of attack.results) {
      if (!byAttack.has(r.attack)) byAttack.set(r.attack, []);
      byAttack.get(r.attack).push({x: r.eps, y: r.robust_accuracy});
    }
    const datasets = Array.from(byAttack.entries()).map(([name, points], i) => ({
      label: name, data: [{x: 0, y: attack.clean_accuracy}].concat(points.sort((a, b) => a.x - b.x)),
      borderColor: PALETTE[i % PALETTE.length], backgroundColor: PALETTE[i % PALETTE.length], borderWidth: 1.8
    }));
    const xMax = Math.max.apply(null, attack.worst_case.map((w) => w.eps));
    const threshold = data.policy.values.evasion.min_robust_accuracy;
    datasets.push({label: 'policy: evasion.min_robust_accuracy', data: [{x: 0, y: threshold}, {x: xMax, y: threshold}],
                   borderColor: '#57606a', borderDash: [6, 4], borderWidth: 1.5, pointRadius: 0});
    return new Chart(canvas, {
      type: 'line',
      data: {datasets: datasets},
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        scales: {
          x: {type: 'linear', min: 0, title: {display: true, text: 'eps (' + attack.norm + ')'}},
          y: {min: 0, max: 1, title: {display: true, text: 'robust accuracy'}}
        }
      }
    });
  }

  // Drawn = enough opaque pixels in more than a couple of colours (axes alone are one grey).
  function hasInk(canvas) {
    if (!canvas.width || !canvas.height) return false;
    const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let opaque = 0;
    const colors = new Set();
    for (let i = 0; i < pixels.length; i += 4) {
      if (pixels[i + 3] === 0) continue;
      opaque += 1;
      if (colors.size < 64) colors.add((pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2]);
    }
    return opaque >= 0.001 * canvas.width * canvas.height && colors.size >= 3;
  }

  function drawAll() {
    const canvases = Array.from(document.querySelectorAll('canvas[data-chart]'));
    let drawn = 0;
    for (const canvas of canvases) {
      try {
        if (canvas.dataset.chart === 'verdicts') verdictChart(canvas);
        else robustnessChart(canvas);
        if (hasInk(canvas)) drawn += 1;
        else console.error('chart ' + canvas.id + ' drew nothing');
      } catch (e) {
        console.error('chart ' + canvas.id + ' failed: ' + e);
      }
    }
    document.body.dataset.chartsExpected = String(canvases.length);
    document.body.dataset.chartsDrawn = String(drawn);
  }

  // Each row of the data must be in the table under its technique ID and verdict.
  function checkRows() {
    let found = 0;
    for (const row of data.rows) {
      const tr = document.querySelector('tr[data-check="' + row.check_key + '"]');
      if (tr && tr.dataset.technique === row.technique.id && tr.dataset.verdict === row.verdict) found += 1;
      else console.error('row ' + row.check_key + ' is not in the table as the data has it');
    }
    document.body.dataset.rows = String(found);
  }

  drawAll();
  checkRows();
})();
