#!/usr/bin/env bash
# Runs an ActiveMQ Classic broker (Debian package activemq) as a plain process
# on loopback with its own base dir: no systemd, no shared state.
#
#   scripts/activemq.sh start BASE PORT [SSLPORT CA.pem CERT.pem KEY.pem]
#   scripts/activemq.sh stop BASE        SIGTERM, then SIGKILL after 15 s
#   scripts/activemq.sh kill BASE        SIGKILL (a crash)
#   scripts/activemq.sh status BASE
#
# start writes BASE/conf (activemq.xml, log4j.properties), launches the broker
# in the background, records its PID in BASE/broker.pid and waits until the
# STOMP port accepts connections. Started again on the same BASE it keeps the
# KahaDB store (persistent messages survive). With SSLPORT it also opens
# stomp+ssl with client-certificate authentication (needClientAuth=true),
# trusting CA.pem and presenting CERT.pem/KEY.pem.
#
# Broker policy (edged relies on it; see README "ActiveMQ"):
#   - persistent KahaDB store, 1 GiB store limit, 64 MiB memory limit;
#   - producer flow control (the default): a full broker slows the producer
#     down; edged's outbox holds what the broker does not take yet;
#   - the statistics plugin, so edged can read queue depth over STOMP;
#   - dead letters of queue Q go to DLQ.Q (individualDeadLetterStrategy).
set -euo pipefail

cmd=${1:-}
base=${2:-}
if [ -z "$cmd" ] || [ -z "$base" ]; then
	sed -n '2,13p' "$0" >&2
	exit 2
fi
pidfile=$base/broker.pid

alive() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case $cmd in
start)
	port=${3:?port}
	sslport=${4:-}
	if alive; then
		echo "activemq: already running (pid $(cat "$pidfile")) in $base"
		exit 0
	fi
	if [ ! -f /usr/share/activemq/bin/activemq.jar ]; then
		echo "activemq: not installed (apt-get install -y activemq)" >&2
		exit 1
	fi
	mkdir -p "$base/conf" "$base/data" "$base/tmp"
	ssl_ctx="" ssl_conn=""
	if [ -n "$sslport" ]; then
		ca=${5:?ca}; cert=${6:?cert}; key=${7:?key}
		pass=edgedtest
		rm -f "$base/conf/broker.p12" "$base/conf/trust.p12"
		openssl pkcs12 -export -in "$cert" -inkey "$key" -name broker \
			-passout pass:$pass -out "$base/conf/broker.p12"
		keytool -importcert -noprompt -alias edged-ca -file "$ca" \
			-storetype PKCS12 -keystore "$base/conf/trust.p12" -storepass $pass >/dev/null
		ssl_ctx="<sslContext><sslContext keyStore=\"file:$base/conf/broker.p12\" keyStorePassword=\"$pass\" keyStoreType=\"PKCS12\" trustStore=\"file:$base/conf/trust.p12\" trustStorePassword=\"$pass\" trustStoreType=\"PKCS12\"/></sslContext>"
		ssl_conn="<transportConnector name=\"stomp+ssl\" uri=\"stomp+ssl://127.0.0.1:$sslport?transport.needClientAuth=true\"/>"
	fi
	cat >"$base/conf/activemq.xml" <<EOF
<beans xmlns="http://www.springframework.org/schema/beans"
       xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
       xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans.xsd
       http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="edged-test" useJmx="false"
          persistent="true" dataDirectory="$base/data" schedulePeriodForDestinationPurge="0">
    <destinationPolicy>
      <policyMap><policyEntries>
        <policyEntry queue=">" producerFlowControl="true" memoryLimit="64mb">
          <deadLetterStrategy><individualDeadLetterStrategy queuePrefix="DLQ." useQueueForQueueMessages="true"/></deadLetterStrategy>
        </policyEntry>
        <policyEntry topic=">" producerFlowControl="false"/>
      </policyEntries></policyMap>
    </destinationPolicy>
    <persistenceAdapter><kahaDB directory="$base/data/kahadb" journalMaxFileLength="32mb"/></persistenceAdapter>
    <plugins><statisticsBrokerPlugin/></plugins>
    <systemUsage><systemUsage>
      <memoryUsage><memoryUsage limit="128 mb"/></memoryUsage>
      <storeUsage><storeUsage limit="1 gb"/></storeUsage>
      <tempUsage><tempUsage limit="256 mb"/></tempUsage>
    </systemUsage></systemUsage>
    $ssl_ctx
    <transportConnectors>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:$port"/>
      $ssl_conn
    </transportConnectors>
  </broker>
</beans>
EOF
	cat >"$base/conf/log4j.properties" <<EOF
log4j.rootLogger=WARN, file
log4j.logger.org.apache.activemq=INFO
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$base/activemq.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=%d %-5p [%t] %c{1} - %m%n
EOF
	# the --add-opens flags are those of /usr/bin/activemq (Java 17)
	nohup java -Xms64m -Xmx256m -XX:+UseSerialGC \
		--add-opens java.base/java.security=ALL-UNNAMED \
		--add-opens java.base/java.net=ALL-UNNAMED \
		--add-opens java.base/java.lang=ALL-UNNAMED \
		--add-opens java.base/java.util=ALL-UNNAMED \
		--add-opens java.naming/javax.naming.spi=ALL-UNNAMED \
		--add-opens java.rmi/sun.rmi.transport.tcp=ALL-UNNAMED \
		--add-opens java.base/java.util.concurrent=ALL-UNNAMED \
		--add-opens java.base/java.util.concurrent.atomic=ALL-UNNAMED \
		-Dactivemq.home=/usr/share/activemq -Dactivemq.base="$base" \
		-Dactivemq.conf="$base/conf" -Dactivemq.data="$base/data" \
		-Dactivemq.classpath="$base/conf:" -Djava.io.tmpdir="$base/tmp" \
		-jar /usr/share/activemq/bin/activemq.jar start "xbean:file:$base/conf/activemq.xml" \
		>"$base/stdout.log" 2>&1 </dev/null &
	echo $! >"$pidfile"
	for _ in $(seq 1 300); do
		if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
			echo "activemq: ready on 127.0.0.1:$port${sslport:+ (stomp+ssl on $sslport)} (pid $(cat "$pidfile"))"
			exit 0
		fi
		if ! alive; then
			echo "activemq: exited during start; last lines of $base/stdout.log:" >&2
			tail -20 "$base/stdout.log" >&2
			exit 1
		fi
		sleep 0.1
	done
	echo "activemq: port $port not open after 30 s; see $base/stdout.log" >&2
	exit 1
	;;
stop | kill)
	if ! alive; then
		rm -f "$pidfile"
		exit 0
	fi
	pid=$(cat "$pidfile")
	if [ "$cmd" = kill ]; then
		kill -KILL "$pid"
	else
		kill -TERM "$pid"
	fi
	for _ in $(seq 1 150); do
		kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; exit 0; }
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	rm -f "$pidfile"
	;;
status)
	if alive; then echo "running (pid $(cat "$pidfile"))"; else echo "stopped"; exit 1; fi
	;;
*)
	echo "activemq.sh: unknown command $cmd" >&2
	exit 2
	;;
esac
