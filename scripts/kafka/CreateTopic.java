// Creates a topic through the Admin API, as `kafka-topics.sh --create` does, for the
// bench scripts (which have no Kafka client of their own). Run as a single-file
// program by `scripts/kafka-broker topic BOOTSTRAP NAME PARTITIONS`.
import java.util.List;
import java.util.Optional;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;

public class CreateTopic {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        try (Admin admin = Admin.create(props)) {
            NewTopic topic = new NewTopic(args[1], Optional.of(Integer.parseInt(args[2])), Optional.empty());
            admin.createTopics(List.of(topic)).all().get();
        }
    }
}
